"""The whole RAR pipeline on held-out conversations: retrieve K, let a reranker order them,
score the final ranking — with no target inserted, so a retrieval miss costs what it costs.

Used by chapter 5 (the feedback loop's before/after table) and chapter 6 (evaluation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rar_lite import metrics
from rar_lite.data.conversations import Conversation
from rar_lite.reranking import rerank
from rar_lite.retrieval.retriever import Retriever


@dataclass
class PipelineRun:
    """Candidates, rankings and per-pair metrics of one system on one conversation set."""

    candidates: list[list[int]]
    rankings: list[rerank.Ranking]
    per_pair: pd.DataFrame  # see `score_rankings`
    seconds: float  # wall time per conversation (retrieval + reranking)

    def summary(self) -> dict[str, float]:
        return {**self.per_pair.mean().to_dict(), "s / conversation": self.seconds}


def retrieve(served: Retriever, conversations: list[Conversation], k: int = 20) -> list[list[int]]:
    """Top-`k` corpus ids for each conversation. A retriever that reads the conversation has
    `topk_conversations(conversations, k)` (the dense and fused retrievers); a history retriever
    has `topk(histories, k)` (LRURec, a popularity baseline) and excludes the history."""
    if hasattr(served, "topk_conversations"):
        ids, _ = served.topk_conversations(conversations, k)
        return [[int(i) for i in row] for row in ids]
    ids, _ = served.topk([list(c.history) for c in conversations], k)
    return [[int(i) for i in row] for row in ids]


def score_rankings(conversations: list[Conversation], rankings: list[rerank.Ranking],
                   candidates: list[list[int]] | None = None, ks: tuple[int, ...] = (5, 10),
                   k: int = 20) -> pd.DataFrame:
    """One row per (conversation, target) pair, indexed by (conversation_id, target): NDCG@ks and
    Recall@ks of the ranking and, when `candidates` are given, whether the target was among them
    ("candidate recall@k")."""
    if len(rankings) != len(conversations) or (candidates is not None
                                                and len(candidates) != len(conversations)):
        raise ValueError("conversations, rankings and candidates must align one to one")
    rows, index = [], []
    for n, (conversation, ranking) in enumerate(zip(conversations, rankings)):
        ranks = metrics.ranks_in_list(ranking.items, conversation.targets)
        values = metrics.per_pair_metrics(ranks, ks)
        for j, target in enumerate(conversation.targets):
            row = {f"{m}@{kk}": float(values[f"{m}@{kk}"][j]) for kk in ks
                   for m in ("ndcg", "recall")}
            if candidates is not None:
                row[f"candidate recall@{k}"] = float(target in candidates[n])
            rows.append(row)
            index.append((conversation.conversation_id, int(target)))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["conversation_id",
                                                                          "target"]))


def pointwise_judge(reranker: object) -> rerank.PointwiseReranker | None:
    """The pointwise judge that `reranker` scores with: itself, or the reranker it blends
    (`rerank.InterpolatedReranker.reranker`, followed down); None when there is none or its
    blend gives it no weight."""
    while reranker is not None and not isinstance(reranker, rerank.PointwiseReranker):
        if isinstance(reranker, rerank.InterpolatedReranker) and reranker.weight == 0.0:
            return None  # the retriever's order alone: the judge is never asked
        reranker = getattr(reranker, "reranker", None)
    return reranker


def prescore(reranker: object, conversations: list[Conversation],
             pools: list[list[list[int]]], progress: bool = False) -> int:
    """Score, in one pass per conversation, every candidate that any system's pool gives it
    (`pools`: per system, one candidate list per conversation), into the answer cache of the
    pointwise judge `reranker` holds. Each candidate is judged alone, so the systems'
    rerankings then read the same scores from the cache, instead of encoding the conversation
    again for each system's few new candidates. Returns how many conversations were scored: 0
    when `reranker` holds no pointwise judge with an answer cache (nothing to share)."""
    judge = pointwise_judge(reranker)
    if judge is None or judge.cache is None:
        return 0
    if any(len(pool) != len(conversations) for pool in pools):
        raise ValueError("every pool must have one candidate list per conversation")
    for n, conversation in enumerate(tqdm(conversations, desc="scoring the systems' candidates",
                                          disable=not progress)):
        union = list(dict.fromkeys(int(c) for pool in pools for c in pool[n]))
        if union:
            judge.rank(conversation, union)
    return len(conversations)


def run_pipeline(served: Retriever, reranker: object, conversations: list[Conversation],
                 k: int = 20, ks: tuple[int, ...] = (5, 10), progress: bool = False,
                 name: str | None = None,
                 candidates: list[list[int]] | None = None) -> PipelineRun:
    """Retrieve `k`, rerank, and score: NDCG/Recall@ks of the final ranking and Recall@k of the
    candidate set (did retrieval give the reranker the target at all?). `candidates`: the
    retrieval already done (`retrieve(served, conversations, k)`); the time is then the
    reranking's alone."""
    if not conversations:
        raise ValueError("no conversations to evaluate")
    started = time.perf_counter()
    if candidates is None:
        candidates = retrieve(served, conversations, k)
    elif len(candidates) != len(conversations):
        raise ValueError("conversations and candidates must align one to one")
    rankings = [reranker.rank(c, pool) for c, pool in tqdm(
        list(zip(conversations, candidates)), desc=name or getattr(reranker, "name", "rerank"),
        disable=not progress)]
    seconds = (time.perf_counter() - started) / len(conversations)
    return PipelineRun(candidates, rankings,
                       score_rankings(conversations, rankings, candidates, ks, k), seconds)


def mean_std(runs: dict[str, list[dict[str, float]]]) -> pd.DataFrame:
    """Rows: systems; columns: "metric" mean and "metric ±" std over seeds."""
    table = {}
    for system, summaries in runs.items():
        frame = pd.DataFrame(summaries)
        row = {}
        for column in frame.columns:
            row[column] = frame[column].mean()
            row[f"{column} ±"] = frame[column].std(ddof=1) if len(frame) > 1 else np.nan
        table[system] = row
    return pd.DataFrame(table).T
