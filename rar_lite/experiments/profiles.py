"""Run sizes: the one place that says how big a run of the book is.

A `Profile` holds every size the chapters, `rar-lite evaluate` and the demo run at. `FULL` is the
book as published; `QUICK` is what the tests and CI run: every code path at the smallest sizes
that still exercise it (its numbers mean nothing).

- Sizes that several chapters share, because a later chapter reuses what an earlier one cached
  (the retriever's epochs, chapter 4's tuning, chapter 5's loop, the real-seekers judge, the
  seven arms), are fields, read by the package's chapter functions, which take the profile.
- A chapter's own sizes are its parameters cell. Each cell names its profile
  (`PROFILE = "full"`); the tests run every chapter with `PROFILE="quick"` and that chapter's
  QUICK sizes (`Profile.parameters`), injected by papermill, so no notebook branches on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from rar_lite.dialogue.real_reranker import DialogueTuning
from rar_lite.experiments.loop_arms import Sizes
from rar_lite.reranking.tune import TuneConfig

if TYPE_CHECKING:
    from rar_lite.loop.feedback import LoopConfig


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType({k: MappingProxyType(dict(v)) if isinstance(v, Mapping) else v
                             for k, v in mapping.items()})


@dataclass(frozen=True)
class Profile:
    """Every size of one kind of run (see the module docstring)."""

    name: str
    retriever_epochs: int | None = None  # LRURec/SASRec epochs; None: to early stopping
    k: int = 20  # candidates per conversation: the reranker's K and the loop's set size
    tune_conversations: int = 1000  # chapter 4's pointwise tuning: training conversations
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(seed=0))  # ...and its settings
    # ...and the steps whose adapters it also saves, for chapter 4's curve of quality by step
    tune_snapshots: tuple[int, ...] = (20, 40, 60, 80)
    loop_train: int = 200  # chapter 5's feedback loop: conversations per round
    loop_rounds: int = 3
    dialogue: DialogueTuning = field(default_factory=DialogueTuning)  # the real-seekers judge
    dev_turns: int | None = None  # INSPIRED dev turns it and the dense fit read (None: all)
    arms: Sizes = field(default_factory=Sizes)  # chapter 5's seven arms
    #: `harness.EvalConfig` fields that no chapter parameter sets
    evaluation: Mapping[str, object] = field(default_factory=dict)
    #: chapter (notebook stem) -> its parameters at this profile (FULL: the cells' own values)
    notebooks: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluation", _frozen(self.evaluation))
        object.__setattr__(self, "notebooks", _frozen(self.notebooks))

    def retriever_overrides(self) -> dict[str, int]:
        """`retriever.fit_retriever` overrides: the epochs, when the profile caps them."""
        return {} if self.retriever_epochs is None else {"epochs": self.retriever_epochs}

    def loop_config(self, seed: int = 0, **overrides: object) -> LoopConfig:
        """Chapter 5's feedback-loop settings at this profile (chapters 6-8, `evaluate` and the
        demo reuse the loop it cached, so they all build its config here)."""
        from rar_lite.loop.feedback import LoopConfig

        return LoopConfig(**{"rounds": self.loop_rounds, "k": self.k, "seed": seed,
                             **overrides})

    def parameters(self, notebook: str | Path) -> dict[str, object]:
        """The papermill parameters that run `notebook` at this profile."""
        sizes = self.notebooks.get(Path(notebook).stem, {})
        return {"PROFILE": self.name, **{k: list(v) if isinstance(v, tuple) else v
                                         for k, v in sizes.items()}}


FULL = Profile("full")

QUICK = Profile(
    "quick",
    retriever_epochs=1,  # the multi-epoch paths (resume, early stopping) are unit-tested
    k=10,  # half the candidates: LLM scoring is most of CI's time
    tune_conversations=8,
    tune=TuneConfig(steps=2, batch_size=4, seed=0),
    tune_snapshots=(1,),
    loop_train=6,
    loop_rounds=1,
    # the same procedure: two steps, the untuned model the only other choice
    dialogue=DialogueTuning(k=10, tune=TuneConfig(steps=2, batch_size=4, lr=3e-4, negatives=3),
                            snapshots=(), n_simulated=8),
    dev_turns=16,
    arms=Sizes(loop=6, selection=6, test=4, pool=12, n_dense=40, real_test=4),
    evaluation={"seeds": (0,), "n_simulated": 4, "n_real": 4, "n_generate": 1, "n_cost": 1,
                "llm_tokens": 32, "generation_tokens": 32, "n_selection_simulated": 6},
    notebooks={
        "01_movie_corpus": {"ROUND_TRIP_SAMPLE": 200},
        "02_conversations": {"N_USERS": 60, "TRAIN_PER_USER": 2},
        "03_retriever": {"N_SERVING": 100},
        "04_llm_reranker": {"N_CONVERSATIONS": 2, "N_GENERATION": 1, "N_LATENCY": 1,
                            "N_API": 1, "GENERATION_TOKENS": 32, "CONSTRAINED_PICKS": 1},
        "05_feedback_loop": {"N_TEST": 4, "ZERO_SHOT_TRAIN": 2, "ARM_SEEDS": (0,),
                             "HEAD_ROUNDS": 2},
        "06_evaluation": {"SEEDS": (0,)},
        "07_align_llm_with_trl": {"MINE_CONVERSATIONS": 4, "N_VALID": 4, "N_TEST": 4,
                                  "DPO_BATCH": 4, "DPO_MAX_STEPS": 2},
    },
)

PROFILES: dict[str, Profile] = {p.name: p for p in (FULL, QUICK)}


def get(profile: str | Profile) -> Profile:
    """The profile named `profile` (a `Profile` is returned as it is)."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[profile]
