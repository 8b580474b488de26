"""rar_lite: retrieval-augmented conversational recommendation with reinforcement learning (RAR),
at laptop scale. The companion package of the rar-lite tutorial book.

The package is a house of rooms, one per concern, each a subpackage whose docstring says what it
holds and which rooms it may import (`tests/test_structure.py` checks every import against it):

- core modules, importable from anywhere: `cache` (the one cache directory, atomic writes,
  checkpoints), `metrics` (NDCG, Recall, MRR), `stats` (intervals and paired tests);
- `data`: corpus, histories, conversations, simulated and real dialogue, name matching;
- `retrieval`: LRURec/SASRec (the paper's retriever), the dense retriever (ours), fusion, FAISS;
- `backends`: the LLM interface, local and API backends, backbone specs, a local server;
- `reranking`: prompts, rerankers, LoRA tuning (chapter 4), DPO alignment (chapter 7);
- `loop`: the pipeline, Plackett-Luce, DPO and the feedback loop (chapter 5);
- `dialogue`: the retriever and reranker fitted on real dev dialogue;
- `experiments`: run sizes (`profiles`) and the chapters' shared artifacts;
- `evaluation`: baselines and the harness of chapter 6 and `rar-lite evaluate`;
- `book`: figures, the demo, building and checking the book;
- `cli`: the `rar-lite` command, which may import every room.

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
