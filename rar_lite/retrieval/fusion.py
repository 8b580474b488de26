"""Fusion: the dense retriever's reading of the conversation, LRURec's collaborative signal,
two popularity priors and the movies already mentioned, as one score over the catalogue.

Each component gives an (n conversations, catalogue) score matrix; the dense and LRURec scores
are standardised per conversation (z-scores), the priors once over the catalogue: `popularity` is
how well known a movie is (IMDb votes, MovieLens ratings), `dialogue` how often the dataset's
training dialogues name it (recommenders in one dataset favour the same films). The `mentioned`
component is 1 for movies the conversation already named (a recommender often names a movie the
seeker brought up; a negative weight pushes them out instead). The fused score is the weighted
sum; the weights are chosen on dev data (`choose_weights`), never on a test split. At weights
(1, 0, 0, 0, 0) fusion *is* the dense retriever, at (0, 1, 0, 0, 0) the LRURec order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from rar_lite import metrics
from rar_lite.data.conversations import Conversation
from rar_lite.retrieval.dense import DenseRetriever, ItemIndex, _cut

COMPONENTS = ("dense", "history", "popularity", "mentioned", "dialogue")


@dataclass(frozen=True)
class FusionWeights:
    """The weight of each component (see the module docstring)."""

    dense: float = 1.0
    history: float = 0.0
    popularity: float = 0.0
    mentioned: float = 0.0
    dialogue: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def standardise(scores: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Row-wise z-scores; where `known` is given, computed over the known columns, the others set
    to 0 (the row's mean: neither favoured nor pushed down). Constant rows become 0."""
    scores = np.asarray(scores, dtype="float64")
    mask = np.ones(scores.shape, dtype=bool) if known is None else known
    count = mask.sum(axis=1, keepdims=True)
    mean = np.where(mask, scores, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
    var = np.where(mask, (scores - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / np.maximum(
        count, 1)
    std = np.sqrt(var)
    out = np.divide(scores - mean, std, out=np.zeros_like(scores), where=std > 0)
    return np.where(mask, out, 0.0).astype("float32")


def history_scores(served: object, conversations: Sequence[Conversation],
                   index: ItemIndex) -> np.ndarray:
    """LRURec's scores of the catalogue after each conversation's mentioned movies, as z-scores
    over the catalogue items in its vocabulary (0 for the others, and for every item when no
    mentioned movie is in its vocabulary). `served` is a `retriever.Retriever`."""
    from rar_lite.retrieval.retriever import score_histories

    vocab = served.vocab
    column_of = {int(item): n for n, item in enumerate(vocab.item_ids)}
    columns = np.array([column_of.get(int(i), -1) for i in index.item_ids])
    known_columns = columns >= 0
    encoded = [vocab.encode(list(c.history)) for c in conversations]
    raw = np.zeros((len(conversations), len(index)), dtype="float64")
    known = np.zeros_like(raw, dtype=bool)
    rows = [n for n, e in enumerate(encoded) if e]
    if rows:
        scores = score_histories(served.model, [encoded[n] for n in rows]).float().numpy()
        raw[np.ix_(rows, np.flatnonzero(known_columns))] = scores[:, columns[known_columns]]
        known[np.ix_(rows, np.flatnonzero(known_columns))] = True
    return standardise(raw, known)


def popularity_prior(corpus: pd.DataFrame, index: ItemIndex) -> np.ndarray:
    """log(1 + fame) of each catalogue item, standardised over the catalogue (fame: IMDb votes +
    `matching.VOTES_PER_RATING` x MovieLens ratings, 0 for movies neither source knows)."""
    from rar_lite.data.matching import VOTES_PER_RATING

    rows = corpus.set_index("item_id").loc[index.item_ids]
    fame = (rows["imdb_votes"].astype("float64").fillna(0).to_numpy()
            + VOTES_PER_RATING * rows["n_ratings"].to_numpy())
    return standardise(np.log1p(fame)[None])[0]


def dialogue_prior(counts: Mapping[int, int] | None, index: ItemIndex) -> np.ndarray:
    """log(1 + times the item is named in training dialogues), standardised over the catalogue
    (all 0 without counts)."""
    if not counts:
        return np.zeros(len(index), dtype="float32")
    named = np.array([counts.get(int(i), 0) for i in index.item_ids], dtype="float64")
    return standardise(np.log1p(named)[None])[0]


def mentioned_matrix(conversations: Sequence[Conversation], index: ItemIndex) -> np.ndarray:
    """1 where the catalogue item was mentioned earlier in the conversation, else 0."""
    out = np.zeros((len(conversations), len(index)), dtype="float32")
    for n, conversation in enumerate(conversations):
        for item in conversation.history:
            if item in index.position:
                out[n, index.position[item]] = 1.0
    return out


@dataclass
class Components:
    """The four score matrices of one conversation set (see `components`)."""

    dense: np.ndarray
    history: np.ndarray
    popularity: np.ndarray  # one row, broadcast
    mentioned: np.ndarray
    dialogue: np.ndarray  # one row, broadcast

    def fuse(self, weights: FusionWeights) -> np.ndarray:
        out = weights.dense * self.dense + weights.mentioned * self.mentioned
        if weights.history:
            out = out + weights.history * self.history
        if weights.popularity:
            out = out + weights.popularity * self.popularity[None]
        if weights.dialogue:
            out = out + weights.dialogue * self.dialogue[None]
        return out


def components(dense: DenseRetriever, served: object | None, corpus: pd.DataFrame,
               conversations: Sequence[Conversation], weights: FusionWeights | None = None,
               counts: Mapping[int, int] | None = None) -> Components:
    """Every component's scores for `conversations`; with `weights`, only those with a
    non-zero weight are computed (the others are 0). LRURec's are 0 when `served` is None;
    `counts` (item -> times named in training dialogues) feed the dialogue prior."""
    index = dense.index
    zeros = np.zeros((len(conversations), len(index)), dtype="float32")
    wanted = weights.as_dict() if weights is not None else dict.fromkeys(COMPONENTS, 1.0)
    history = (history_scores(served, conversations, index)
               if served is not None and wanted["history"] else zeros)
    scored = standardise(dense.scores(conversations)) if wanted["dense"] else zeros
    return Components(scored, history, popularity_prior(corpus, index),
                      mentioned_matrix(conversations, index), dialogue_prior(counts, index))


#: The grid `choose_weights` searches (dense weight fixed at 1: only the ratios matter).
GRID: dict[str, tuple[float, ...]] = {
    "history": (0.0, 0.1, 0.2, 0.35, 0.5),
    "popularity": (0.0, 0.1, 0.2, 0.35),
    "mentioned": (-10.0, 0.0, 1.0, 2.0, 3.0),
    "dialogue": (0.0, 0.1, 0.2, 0.35, 0.5),
}


def objective(scores: np.ndarray, targets: list[list[int]], k: int = 20) -> dict[str, float]:
    """NDCG@10, recall@`k` (the reranker's candidates hold the target) and their mean, the score
    `choose_weights` maximises: the retriever must both order the top and hand over the target."""
    ranks = metrics.stable_ranks(scores, targets)
    found = metrics.metrics_from_ranks(ranks, (10, k)) if len(ranks) else {}
    ndcg, recall = found.get("ndcg@10", 0.0), found.get(f"recall@{k}", 0.0)
    return {"ndcg@10": ndcg, f"recall@{k}": recall, "objective": (ndcg + recall) / 2}


def recall_at(scores: np.ndarray, targets: list[list[int]], k: int) -> float:
    """Share of (row, target) pairs whose target is among the row's `k` best scores (ties
    broken by position)."""
    ranks = metrics.stable_ranks(scores, targets)
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def choose_weights(parts: Components, targets: list[list[int]],
                   grid: dict[str, tuple[float, ...]] = GRID,
                   k: int = 20) -> tuple[FusionWeights, pd.DataFrame]:
    """The grid point with the best `objective` on `targets` (index positions), ties to the
    smaller weights, and the whole grid as a table. Call it on dev data only."""
    rows = []
    names = [c for c in COMPONENTS if c != "dense"]
    for values in itertools.product(*(grid.get(c, (0.0,)) for c in names)):
        weights = FusionWeights(1.0, **dict(zip(names, values)))
        rows.append({**weights.as_dict(), **objective(parts.fuse(weights), targets, k)})
    table = pd.DataFrame(rows)
    best = table.sort_values(["objective", *names], ascending=[False] + [True] * len(names),
                             kind="stable").iloc[0]
    return FusionWeights(**{c: float(best[c]) for c in COMPONENTS}), table


class FusedRetriever:
    """Dense + LRURec + prior + mentioned, fused with `weights`, served as a top K."""

    def __init__(self, dense: DenseRetriever, served: object | None, corpus: pd.DataFrame,
                 weights: FusionWeights = FusionWeights(),
                 counts: Mapping[int, int] | None = None, exclude_history: bool = False) -> None:
        self.dense, self.served, self.corpus, self.weights = dense, served, corpus, weights
        self.counts, self.exclude_history = counts, exclude_history

    def with_served(self, served: object | None) -> FusedRetriever:
        """The same fusion over another LRURec (another seed, or after the feedback loop)."""
        return FusedRetriever(self.dense, served, self.corpus, self.weights, self.counts,
                              self.exclude_history)

    def with_head(self, head: object | None) -> FusedRetriever:
        """The same fusion with another dense query head (e.g. after the feedback loop)."""
        return FusedRetriever(self.dense.with_head(head), self.served, self.corpus, self.weights,
                              self.counts, self.exclude_history)

    @property
    def index(self) -> ItemIndex:
        return self.dense.index

    def scores(self, conversations: Sequence[Conversation]) -> np.ndarray:
        """(n, catalogue) fused scores."""
        return components(self.dense, self.served, self.corpus, conversations,
                          self.weights, self.counts).fuse(self.weights)

    def topk_conversations(self, conversations: Sequence[Conversation], k: int = 20,
                           exclude_history: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` item ids and fused scores per conversation (two (n, k) arrays); mentioned
        movies removed when `exclude_history` (default: the retriever's own setting). A
        catalogue too small for `k` gives all it has (the same number for every row)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if exclude_history is None:
            exclude_history = self.exclude_history
        removed = max((len(set(c.history) & self.index.position.keys()) for c in conversations),
                      default=0) if exclude_history else 0
        k = min(k, len(self.index) - removed)
        if k < 1:
            raise ValueError("the mentioned movies cover the whole catalogue")
        scores = self.scores(conversations)
        columns = np.argsort(-scores, axis=1, kind="stable")
        depth = min(len(self.index), k + (max((len(c.history) for c in conversations),
                                              default=0) if exclude_history else 0))
        columns = columns[:, :depth]
        return _cut(self.index.item_ids, conversations,
                    np.take_along_axis(scores, columns, axis=1), columns, k, exclude_history)


def reach(ids: np.ndarray, conversations: Sequence[Conversation],
          ks: tuple[int, ...] = (20, 50, 100)) -> dict[str, float]:
    """Share of (conversation, target) pairs whose target is in the top k of `ids` (n, >= max k)."""
    hits = {k: [] for k in ks}
    for row, conversation in zip(ids, conversations):
        for target in conversation.targets:
            where = np.flatnonzero(row == target)
            for k in ks:
                hits[k].append(bool(where.size and where[0] < k))
    return {f"reach@{k}": float(np.mean(v)) if v else float("nan") for k, v in hits.items()}

