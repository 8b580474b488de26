"""rar_lite: retrieval-augmented conversational recommendation with reinforcement learning (RAR),
at laptop scale. The companion package of the rar-lite tutorial book.

Importing the package hides a few deprecation notices of the libraries it drives
(`DEPENDENCY_DEPRECATIONS`): transformers 5.x warns (`FutureWarning`, from its own modules) each
time peft or TRL read or set the old `gradient_checkpointing` names, which rar_lite never uses; a
reader cannot act on the notice, and it prints the builder's install path into the book. The
filters are narrow (one category, one library's modules, the deprecation wording): every other
warning, ours or theirs, still shows.
"""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

#: (category, module regex, message regex) of each dependency deprecation notice hidden.
DEPENDENCY_DEPRECATIONS: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, r"transformers\.(modeling_utils|training_args)$",
     r"`(is_)?gradient_checkpointing(_kwargs)?` is deprecated"),
)


def quiet_dependency_deprecations() -> None:
    """Install the filters of `DEPENDENCY_DEPRECATIONS` (idempotent: `warnings` drops repeats)."""
    for category, module, message in DEPENDENCY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


quiet_dependency_deprecations()
