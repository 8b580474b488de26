"""The chapters' shared artifacts, each built or loaded from the cache through one function:
the simulated data (data seed `DATA_SEED`), chapter 3's LRURec (`loop_setup`, `study_setup`),
chapter 4's tuned pointwise reranker (`chapter_tuning`, `chapter_backend`), the judge tuned on
real dev dialogue (`chapter_judge`) and chapter 5's feedback loop (`run_feedback`).

The notebooks, `rar-lite evaluate` (`rar_lite.evaluation.harness`), the demo and the benchmark
scripts all get them here, so every later consumer reuses what the chapter that teaches it cached;
the chapters' own experiments (`reranker_study`, `loop_study`, `loop_arms`) build on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rar_lite import cache
from rar_lite.backends.llm import ResponseCache
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data import simulate
from rar_lite.data.conversations import Conversation
from rar_lite.data.corpus import load_corpus
from rar_lite.dialogue import real_reranker, realdata
from rar_lite.experiments import profiles
from rar_lite.loop import feedback
from rar_lite.reranking import rerank
from rar_lite.reranking.tune import Example, pointwise_examples
from rar_lite.retrieval import retriever

DATA_SEED = 0


@dataclass
class LoopSetup:
    corpus: pd.DataFrame
    sets: simulate.SimulatedSets
    served: retriever.Retriever  # the SFT retriever (π_ref)
    run_directory: Path  # where its training run lives (identifies it)


def lrurec(sets: simulate.SimulatedSets, seed: int, profile: str | profiles.Profile,
           progress: bool = False) -> tuple[retriever.Retriever, retriever.TrainResult]:
    """Chapter 3's LRURec on `sets`' split, trained with `seed` at `profile`'s epochs (cached)."""
    return retriever.fit_retriever(sets.split, "lrurec", seed=seed, progress=progress,
                                   **profiles.get(profile).retriever_overrides())


def loop_setup(seed: int = 0, profile: str | profiles.Profile = profiles.FULL,
               progress: bool = False, sets: simulate.SimulatedSets | None = None) -> LoopSetup:
    """Data (seed 0; pass `sets` to reuse them) and the chapter-3 LRURec trained with `seed` at
    `profile`'s epochs (cached)."""
    corpus = load_corpus()
    sets = sets or simulate.simulated_sets(corpus, seed=DATA_SEED, progress=progress)
    served, result = lrurec(sets, seed, profile, progress)
    return LoopSetup(corpus, sets, served, result.directory)


def sample_conversations(conversations: list[Conversation], n: int,
                         seed: int = DATA_SEED) -> list[Conversation]:
    """`n` conversations drawn without replacement (seeded), in their original order."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(conversations), size=min(n, len(conversations)),
                               replace=False))
    return [conversations[i] for i in chosen]


def validate(setup: LoopSetup, model=None) -> dict[str, float]:
    """The retriever's leave-one-out validation NDCG@10 / Recall@10 (default: the SFT model)."""
    scores = retriever.evaluate_split(model or setup.served.model, setup.sets.split,
                                      setup.served.vocab, "valid")
    return {k: scores[k] for k in ("ndcg@10", "recall@10")}


def run_feedback(setup: LoopSetup, reranker: object, config: feedback.LoopConfig,
                 n_train: int = 200, progress: bool = False) -> feedback.LoopResult:
    """The loop on `n_train` training conversations, validated each round on the leave-one-out
    validation targets; rounds are cached under `cache_dir()/feedback/`."""
    conversations = sample_conversations(setup.sets.train, n_train)
    vocab = setup.served.vocab

    key = cache.fingerprint(asdict(config), str(setup.run_directory.name),
                            getattr(getattr(reranker, "backend", None), "model", None),
                            getattr(reranker, "name", None),
                            [c.conversation_id for c in conversations])
    directory = cache.cache_dir() / "feedback" / f"loop-{key}"
    return feedback.run_loop(setup.served.model, vocab, conversations, reranker, config,
                             directory, validate=lambda model: validate(setup, model),
                             progress=progress)


@dataclass
class StudySetup:
    """Everything chapter 4 evaluates on."""

    corpus: pd.DataFrame
    sets: simulate.SimulatedSets
    served: retriever.Retriever
    conversations: list[Conversation]  # validation conversations under study
    candidates: list[list[int]]  # their K candidates, retriever order


def study_setup(n_conversations: int = 150, k: int | None = None, seed: int = 0,
                profile: str | profiles.Profile = profiles.FULL, progress: bool = False,
                sets: simulate.SimulatedSets | None = None) -> StudySetup:
    """Simulated sets (simulated with `seed`, or `sets` when given), the chapter-3 LRURec at
    `profile`'s epochs (cached), and `n_conversations` validation cases with `k` candidates
    each (None: the profile's `k`)."""
    k = k or profiles.get(profile).k
    corpus = load_corpus()
    sets = sets or simulate.simulated_sets(corpus, seed=seed, progress=progress)
    served, _ = lrurec(sets, seed, profile, progress)
    conversations = sample_conversations(sets.valid, n_conversations, seed)
    candidates = rerank.candidate_sets(conversations, served.topk, k=k)
    return StudySetup(corpus, sets, served, conversations, candidates)


def training_conversations(sets: simulate.SimulatedSets, n_conversations: int,
                           seed: int = 0) -> list[Conversation]:
    """The training conversations the pointwise reranker is tuned on (seeded, original order)."""
    return sample_conversations(sets.train, n_conversations, seed)


def training_examples(setup: StudySetup, n_conversations: int, k: int = 20,
                      negatives: int = 3, seed: int = 0, card: str = "brief") -> list[Example]:
    """Pointwise examples from *training* conversations: the target "yes", `negatives` of its
    retrieved candidates "no" (hard negatives: what the reranker will face), each movie shown
    by its `card` (`rerank.card_texts`)."""
    conversations = training_conversations(setup.sets, n_conversations, seed)
    pools = rerank.candidate_sets(conversations, setup.served.topk, k=k, include_target=False)
    texts = rerank.card_texts(setup.corpus, card)
    return pointwise_examples(conversations, pools, texts, negatives=negatives, seed=seed)


def tuned_backend(setup: StudySetup, config=None, n_train: int = 1000, seed: int = 0,
                  progress: bool = False, card: str = "brief",
                  snapshots: tuple[int, ...] = ()):
    """Tune the pointwise reranker on `n_train` training conversations, shown by their `card`,
    also saving the adapters of the steps in `snapshots` (or load the cached adapter of an
    identical earlier run) and return (backend with the adapter, TuneResult)."""
    from rar_lite.reranking.tune import TuneConfig, tune_pointwise

    config = config or TuneConfig(seed=seed)
    examples = training_examples(setup, n_train, negatives=config.negatives, seed=seed,
                                 card=card)
    key = cache.fingerprint(config.__dict__, [e.__dict__ for e in examples])
    result = tune_pointwise(examples, config, cache.cache_dir() / "adapters" / f"pointwise-{key}",
                            progress=progress, snapshots=snapshots)
    return TransformersBackend(adapter=result.adapter), result


def chapter_tuning(profile: str | profiles.Profile = profiles.FULL,
                   sets: simulate.SimulatedSets | None = None, progress: bool = False):
    """(backend, TuneResult) of chapter 4's tuned pointwise reranker at `profile`'s sizes (its
    step snapshots included), for chapter 4 and the later chapters, which reuse its adapter."""
    profile = profiles.get(profile)
    study = study_setup(4, seed=0, profile=profile, sets=sets)
    return tuned_backend(study, profile.tune, n_train=profile.tune_conversations,
                         progress=progress, snapshots=profile.tune_snapshots)


def chapter_backend(profile: str | profiles.Profile = profiles.FULL,
                    sets: simulate.SimulatedSets | None = None, progress: bool = False):
    """The backend of `chapter_tuning` alone."""
    return chapter_tuning(profile, sets, progress)[0]


def chapter_judge(served: object | None, profile: str | profiles.Profile = "full", seed: int = 0,
                  progress: bool = False,
                  data: tuple[object, list[Conversation] | None] | None = None
                  ) -> tuple[realdata.RealRetrieval, real_reranker.DialogueReranker] | None:
    """Chapter 4's real-seekers section: the retriever fitted on INSPIRED's dev dialogues (LRURec
    `served` in the fusion) and the judge tuned on them, at `profile`'s sizes; None (with
    `realdata.MISSING_DATA` printed) when INSPIRED is not here. `data`: (dataset, dev turns)
    already loaded, e.g. by `realdata.chapter_inspired`, which has said why when they are absent."""
    profile = profiles.get(profile)
    inspired, dev = data if data is not None else realdata.load_inspired(load_corpus())
    if inspired is None or not dev:
        if data is None:
            print(realdata.MISSING_DATA)
        return None
    dev = dev[:profile.dev_turns] if profile.dev_turns else dev
    fit = realdata.fit(inspired.corpus, realdata.catalogue(inspired), served, dev, seed=seed,
                       progress=progress)
    judge = real_reranker.tune_on_dialogue(fit.fused(served, inspired.corpus), inspired.corpus,
                                           fit.train, fit.selection, profile.dialogue, seed=seed,
                                           response_cache=ResponseCache(), progress=progress)
    return fit, judge
