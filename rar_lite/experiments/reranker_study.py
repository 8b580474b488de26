"""Chapter 4's experiment, shared by the notebook and `scripts/bench_reranker.py`.

`study_setup` builds the cases — held-out simulated *validation* conversations with their K
retrieved candidates (the target put at a random position when the retriever missed it, so every set
contains the answer) — and `compare_rerankers` runs named rerankers on them and tabulates
NDCG/Recall/MRR, position bias, failures, hallucinations and latency. LLM outputs go through the
response cache, so the notebook and the benchmark never pay twice for the same prompt.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from rar_lite import stats
from rar_lite.backends.llm import Backend, ResponseCache, gives_logits
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.data.matching import TitleMatcher
from rar_lite.experiments.artifacts import StudySetup
from rar_lite.reranking import prompts, rerank

NO_REQUEST = "(no request)"


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
                         response_cache: ResponseCache | None = None, max_new_tokens: int = 96,
                         picks: int = 3) -> dict[str, object]:
    """Chapter 4's generation modes: free generation (every backbone; answers of at most
    `max_new_tokens`) and, with logits, generation constrained to the candidates' titles (`picks`
    titles written, the rest in the retriever's order)."""
    rankers: dict[str, object] = {"generation (zero-shot)": rerank.GenerationReranker(
        backend, corpus, matcher, max_new_tokens=max_new_tokens, response_cache=response_cache)}
    if gives_logits(backend):
        rankers["constrained generation (zero-shot)"] = rerank.ConstrainedReranker(
            backend, corpus, n=picks, response_cache=response_cache)
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


def tuning_curve(adapters: dict[int, Path | None], corpus: pd.DataFrame,
                 conversations: list[Conversation], candidates: list[list[int]],
                 response_cache: ResponseCache | None = None, card: str = "brief",
                 progress: bool = False) -> tuple[pd.DataFrame, dict[int, pd.Series]]:
    """Quality by number of tuning steps: the pointwise reranker with each step's adapter
    (`tune.step_adapters`; None is the untuned model) on the same cases, one model loaded at a
    time. Returns (one row per step: NDCG@10 and Recall@10; each step's NDCG@10 per
    (conversation, target) pair, for paired comparisons)."""
    from rar_lite.backends.llm_local import TransformersBackend
    from rar_lite.loop.pipeline import score_rankings

    rows, per_pair = [], {}
    for step, adapter in adapters.items():
        reranker = rerank.PointwiseReranker(TransformersBackend(adapter=adapter), corpus,
                                            response_cache=response_cache, card=card)
        rankings = run(reranker, conversations, candidates, progress)[0]
        scores = rerank.evaluate_rankings(rankings, conversations)
        rows.append({"step": step, "ndcg@10": scores["ndcg@10"],
                     "recall@10": scores["recall@10"]})
        per_pair[step] = score_rankings(conversations, rankings, ks=(10,))["ndcg@10"]
    return pd.DataFrame(rows).set_index("step"), per_pair


def describe_curve(curve: pd.DataFrame, per_pair: dict[int, pd.Series]) -> str:
    """Sentences on `tuning_curve`'s results, from its numbers: NDCG@10 untuned, at the end and
    at its best, and whether the last stretch of steps changed it beyond noise (paired test)."""
    value = curve["ndcg@10"]
    first, last = int(value.index[0]), int(value.index[-1])
    text = (f"NDCG@10 {value[first]:.3f} at step {first}, {value[last]:.3f} at step {last}; "
            f"the highest, {value.max():.3f}, at step {int(value.idxmax())}.")
    if len(value) > 2:
        before = int(value.index[-2])
        text += " " + stats.describe_paired(stats.paired_test(per_pair[last], per_pair[before]),
                                            f"step {last}", f"step {before}")
    return text


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


