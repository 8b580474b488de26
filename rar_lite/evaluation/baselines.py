"""The baselines RAR is measured against that are not a reranker over retrieved candidates.

- `PopularityRecommender`: the most-interacted items not yet mentioned. It has the retriever's
  `topk(histories, k)` interface, so the evaluation serves it exactly like a retriever.
- `OpenRecommender`: the LLM recommends from the conversation alone (no retrieval), as He et al.
  (CIKM 2023) evaluate zero-shot LLMs; the names it writes are resolved with the title matcher,
  and those resolving to no corpus movie are its hallucinations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rar_lite.backends.llm import (
    Backend,
    ResponseCache,
    cached_generate,
    pools_requests,
)
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data import parsing
from rar_lite.data.conversations import Conversation
from rar_lite.data.matching import TitleMatcher
from rar_lite.reranking import prompts
from rar_lite.reranking.rerank import Ranking, resolve_names


class PopularityRecommender:
    """Top-`k` items by interaction count, skipping the conversation's history.

    `counts`: interactions per corpus item id (index: item id). Ties go to the smaller item id,
    so the ranking is deterministic.
    """

    name = "popularity"

    def __init__(self, counts: pd.Series) -> None:
        if counts.empty:
            raise ValueError("popularity needs at least one item count")
        if (counts < 0).any():
            raise ValueError("interaction counts must be non-negative")
        frame = pd.DataFrame({"item": counts.index.astype("int64"), "count": counts.to_numpy()})
        ordered = frame.sort_values(["count", "item"], ascending=[False, True], kind="stable")
        self.order = ordered["item"].to_numpy()

    def topk(self, histories: list[list[int]], k: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores): the `k` most popular items not in each history (scores: -rank)."""
        if k < 1 or k > len(self.order):
            raise ValueError(f"k must be in 1..{len(self.order)}, got {k}")
        ids = np.empty((len(histories), k), dtype="int64")
        for row, history in enumerate(histories):
            seen = set(history)
            picked = [int(i) for i in self.order[: k + len(seen)] if int(i) not in seen][:k]
            if len(picked) < k:
                raise ValueError(f"history {row} leaves fewer than k={k} items to recommend")
            ids[row] = picked
        return ids, -np.tile(np.arange(k, dtype="float32"), (len(histories), 1))


class OpenRecommender:
    """The LLM without retrieval: it names `n` movies for the conversation, resolved to corpus
    items (see the module docstring).

    `Ranking.items` holds the resolved movies in the answer's order, without repeats and without
    movies already mentioned (`listed` keeps every resolved name, `hallucinated` the names that
    resolve to nothing). With a local model the answer is started with "1." so that the small
    model writes a list rather than chat.
    """

    name = "llm without retrieval"

    def __init__(self, backend: Backend, matcher: TitleMatcher, n: int = 10,
                 max_new_tokens: int = 128, response_cache: ResponseCache | None = None,
                 batch_size: int = 8) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.backend, self.matcher, self.n = backend, matcher, n
        self.max_new_tokens, self.cache, self.batch_size = max_new_tokens, response_cache, batch_size
        self.prefix = "1." if isinstance(backend, TransformersBackend) else ""

    def answers(self, conversations: Sequence[Conversation], progress: bool = False) -> list[str]:
        """The raw answers (cached per prompt when a response cache is given)."""
        texts = [prompts.open_prompt(c, n=self.n) for c in conversations]
        pooled = pools_requests(self.backend)
        # a local model answers in batches; an API model gets every prompt at once and keeps
        # its own `concurrency` requests in flight (with its own progress bar)
        size = max(1, len(texts)) if pooled else self.batch_size
        out: list[str] = []
        for start in tqdm(range(0, len(texts), size), desc=self.name,
                          disable=not progress or pooled):
            out += cached_generate(self.backend, texts[start:start + size], self.cache,
                                   self.max_new_tokens, prefix=self.prefix,
                                   progress=progress and pooled)
        return out

    def recommend(self, conversations: Sequence[Conversation],
                  progress: bool = False) -> list[Ranking]:
        """One `Ranking` per conversation (see the class docstring)."""
        return [ranking_from_open_answer(raw, c, self.matcher)
                for raw, c in zip(self.answers(conversations, progress), conversations)]


def ranking_from_open_answer(raw: str, conversation: Conversation,
                             matcher: TitleMatcher) -> Ranking:
    """Resolve an open answer's names: corpus movies in order (no repeats, nothing already
    mentioned), plus the names that resolve to nothing."""
    names = parsing.parse_list(raw)
    mentioned = set(conversation.history)
    listed, hallucinated = resolve_names(names, matcher)
    items = [i for i in dict.fromkeys(listed) if i not in mentioned]
    failure = None if names else "no parsable list in the answer"
    return Ranking(items, None, failure, raw, listed, hallucinated, [])
