"""Chapter 4's experiment, shared by the notebook and `scripts/bench_reranker.py`.

`study_setup` builds the cases — held-out simulated *validation* conversations with their K
retrieved candidates (the target put at a random position when the retriever missed it, so every set
contains the answer) — and `compare_rerankers` runs named rerankers on them and tabulates
NDCG/Recall/MRR, position bias, failures, hallucinations and latency. LLM outputs go through the
response cache, so the notebook and the benchmark never pay twice for the same prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from rar_lite.backends.llm import Backend, ResponseCache, gives_logits
from rar_lite.data import simulate
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.corpus import load_corpus
from rar_lite.data.matching import TitleMatcher
from rar_lite.dialogue import real_reranker, realdata
from rar_lite.experiments import profiles
from rar_lite.reranking import prompts, rerank
from rar_lite.reranking.tune import Example, pointwise_examples
from rar_lite.retrieval import retriever

NO_REQUEST = "(no request)"


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
    served, _ = retriever.fit_retriever(sets.split, "lrurec", seed=seed, progress=progress,
                                        **profiles.get(profile).retriever_overrides())
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(sets.valid), size=min(n_conversations, len(sets.valid)),
                               replace=False))
    conversations = [sets.valid[i] for i in chosen]
    candidates = rerank.candidate_sets(conversations, served.topk, k=k)
    return StudySetup(corpus, sets, served, conversations, candidates)


def training_conversations(sets: simulate.SimulatedSets, n_conversations: int,
                           seed: int = 0) -> list[Conversation]:
    """The training conversations the pointwise reranker is tuned on (seeded, original order)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(sets.train), size=min(n_conversations, len(sets.train)),
                        replace=False)
    return [sets.train[i] for i in sorted(chosen)]


def training_examples(setup: StudySetup, n_conversations: int, k: int = 20,
                      negatives: int = 3, seed: int = 0) -> list[Example]:
    """Pointwise examples from *training* conversations: the target "yes", `negatives` of its
    retrieved candidates "no" (hard negatives: what the reranker will face)."""
    conversations = training_conversations(setup.sets, n_conversations, seed)
    pools = rerank.candidate_sets(conversations, setup.served.topk, k=k, include_target=False)
    texts = setup.corpus.set_index("item_id")["text"]
    return pointwise_examples(conversations, pools, texts, negatives=negatives, seed=seed)


def without_request(conversation: Conversation) -> Conversation:
    """The same conversation with every seeker utterance replaced by a placeholder: the ablation
    that shows whether a reranker reads the words."""
    turns = tuple(Turn(t.speaker, NO_REQUEST if t.speaker == "seeker" else t.text)
                  for t in conversation.turns)
    return replace(conversation, turns=turns)


def zero_shot_rerankers(backend: Backend, corpus: pd.DataFrame, seed: int = 0,
                        response_cache: ResponseCache | None = None) -> dict[str, object]:
    """Chapter 4's first table: chance, the retriever's order, the keyword rule and, when the
    backbone gives next-token logits (a local model), the zero-shot verbalizer (once, and
    averaged over 4 shown orders) and pointwise reranker."""
    rankers: dict[str, object] = {"random order": rerank.RandomOrder(seed),
                                  "retriever order": rerank.RetrieverOrder(),
                                  "keyword match": rerank.KeywordReranker(corpus)}
    if gives_logits(backend):
        rankers.update({
            "verbalizer (zero-shot)": rerank.VerbalizerReranker(
                backend, corpus, response_cache=response_cache),
            "verbalizer x4 permutations (zero-shot)": rerank.VerbalizerReranker(
                backend, corpus, permutations=4, response_cache=response_cache),
            "pointwise (zero-shot)": rerank.PointwiseReranker(
                backend, corpus, response_cache=response_cache)})
    return rankers


def generation_rerankers(backend: Backend, corpus: pd.DataFrame, matcher: TitleMatcher,
                         response_cache: ResponseCache | None = None) -> dict[str, object]:
    """Chapter 4's generation modes: free generation (every backbone) and, with logits,
    generation constrained to the candidates' titles."""
    rankers: dict[str, object] = {"generation (zero-shot)": rerank.GenerationReranker(
        backend, corpus, matcher, response_cache=response_cache)}
    if gives_logits(backend):
        rankers["constrained generation (zero-shot)"] = rerank.ConstrainedReranker(
            backend, corpus, response_cache=response_cache)
    return rankers


def run(reranker: object, conversations: list[Conversation], candidates: list[list[int]],
        progress: bool = False) -> tuple[list[rerank.Ranking], float]:
    """Rankings of every case and the mean seconds per conversation."""
    started = time.perf_counter()
    rankings = rerank.rank_all(reranker, conversations, candidates, progress)
    return rankings, (time.perf_counter() - started) / max(1, len(conversations))


def compare_rerankers(rerankers: dict[str, object], conversations: list[Conversation],
                      candidates: list[list[int]], progress: bool = False,
                      ablate: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """One row per reranker: NDCG/Recall/MRR, share of first-shown candidates ranked first
    (position bias; 1/K is unbiased), failures, hallucination/outside rates. Names in `ablate`
    are also run with the seeker's words removed. (Latency: `latency`, without the cache.)

    Returns (table, rankings by row name).
    """
    rows, all_rankings = [], {}
    jobs = [(name, r, conversations) for name, r in rerankers.items()]
    jobs += [(f"{name} (words removed)", rerankers[name],
              [without_request(c) for c in conversations]) for name in ablate
             if name in rerankers]  # a mode the backbone cannot run is not there to ablate
    for name, reranker, cases in jobs:
        rankings, _ = run(reranker, cases, candidates, progress)
        scores = rerank.evaluate_rankings(rankings, conversations)
        bias = rerank.position_bias(rankings, candidates)
        rows.append({"reranker": name, **{k: scores[k] for k in (
            "ndcg@5", "ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10")},
            "first shown ranked first": float(bias[0]), "failures": scores["failures"],
            "hallucination rate": scores["hallucination_rate"],
            "outside rate": scores["outside_rate"]})
        all_rankings[name] = rankings
    return pd.DataFrame(rows).set_index("reranker"), all_rankings


def latency(rerankers: dict[str, object], conversations: list[Conversation],
            candidates: list[list[int]]) -> pd.Series:
    """Mean seconds per conversation of each reranker with its response cache switched off
    (what a new conversation costs)."""
    out = {}
    for name, reranker in rerankers.items():
        saved = getattr(reranker, "cache", None)
        if saved is not None:
            reranker.cache = None
        try:
            out[name] = run(reranker, conversations, candidates)[1]
        finally:
            if saved is not None:
                reranker.cache = saved
    return pd.Series(out, name="seconds per conversation")


def example_prompt(setup: StudySetup, index: int = 0) -> str:
    """The listwise prompt of one case, as the LLM sees it (before the chat template)."""
    texts = setup.corpus.set_index("item_id")["text"]
    return prompts.listwise_prompt(setup.conversations[index],
                                   [texts[c] for c in setup.candidates[index]])


def tuned_backend(setup: StudySetup, config=None, n_train: int = 1000, seed: int = 0,
                  progress: bool = False):
    """Tune the pointwise reranker on `n_train` training conversations (or load the cached
    adapter of an identical earlier run) and return (backend with the adapter, TuneResult)."""
    from rar_lite import cache
    from rar_lite.backends.llm_local import TransformersBackend
    from rar_lite.reranking.tune import TuneConfig, tune_pointwise

    config = config or TuneConfig(seed=seed)
    examples = training_examples(setup, n_train, negatives=config.negatives, seed=seed)
    key = cache.fingerprint(config.__dict__, [e.__dict__ for e in examples])
    result = tune_pointwise(examples, config, cache.cache_dir() / "adapters" / f"pointwise-{key}",
                            progress=progress)
    return TransformersBackend(adapter=result.adapter), result


def chapter_tuning(profile: str | profiles.Profile = profiles.FULL,
                   sets: simulate.SimulatedSets | None = None, progress: bool = False):
    """(backend, TuneResult) of chapter 4's tuned pointwise reranker at `profile`'s sizes, for
    the later chapters; the adapter chapter 4 cached is reused."""
    profile = profiles.get(profile)
    study = study_setup(4, seed=0, profile=profile, sets=sets)
    return tuned_backend(study, profile.tune, n_train=profile.tune_conversations,
                         progress=progress)


def chapter_backend(profile: str | profiles.Profile = profiles.FULL,
                    sets: simulate.SimulatedSets | None = None, progress: bool = False):
    """The backend of `chapter_tuning` alone."""
    return chapter_tuning(profile, sets, progress)[0]


def describe(table: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """Plain sentences comparing each LLM reranker in `table` with chance, the retriever's order
    and its own words-removed ablation — written from the measured numbers, never assumed."""
    value = table[metric]
    lines = []
    reference = [f"{name} {value[name]:.3f}" for name in ("random order", "retriever order",
                                                         "keyword match") if name in value]
    if reference:
        lines.append(f"{metric}: " + ", ".join(reference) + ".")
    for name in value.index:
        if name in ("random order", "retriever order", "keyword match") or "removed" in name:
            continue
        text = f"{name}: {value[name]:.3f}"
        if "retriever order" in value:
            text += f" ({value[name] - value['retriever order']:+.3f} vs the retriever's order"
            text += ")" if f"{name} (words removed)" not in value else ""
        ablated = f"{name} (words removed)"
        if ablated in value:
            text += (f"; {value[ablated]:.3f} with the seeker's words removed"
                     f"{')' if 'retriever order' in value else ''}")
        lines.append(text + ".")
    return "\n".join(lines)


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
