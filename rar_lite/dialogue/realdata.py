"""The retriever for real conversations, fitted on dev dialogue only.

For a CIKM-format dataset (`rar_lite.data.cikm`) the catalogue is the dataset's own movies
(`item_ids.json`, each matched to its corpus card where the corpus has it): He et al. rank over
the dataset's names too, and no target is unreachable by construction. On that catalogue:

- the dense retriever (`rar_lite.retrieval.dense`) embeds the conversation and the cards; its query
  head is trained on the *train* dialogues of INSPIRED's dev split, its epoch chosen on the
  *selection* dialogues (`unicrs.split_by_dialogue`);
- the fusion weights (`rar_lite.retrieval.fusion`) are chosen on the selection dialogues;
- the reranker's interpolation weight too (`choose_rerank_weight`); on real data the reranker
  itself is tuned on the train dialogues (`rar_lite.dialogue.real_reranker`).

No test split is read to choose anything. Without dev data (a fresh clone), the dense retriever
runs zero-shot with `DEFAULT_WEIGHTS`, the weights this procedure chose on INSPIRED's dev split
(recorded in `DEFAULT_WEIGHTS`' comment).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rar_lite import cache
from rar_lite.data import download, unicrs
from rar_lite.data.cikm import CikmDataset
from rar_lite.data.conversations import Conversation
from rar_lite.loop import pipeline
from rar_lite.reranking.rerank import InterpolatedReranker
from rar_lite.retrieval import dense, fusion

log = logging.getLogger(__name__)

#: Where INSPIRED's dev split (UniCRS format, `dev.jsonl`) is found.
DEV_ENV = download.DEV_ENV
#: How conversations become queries (compared on INSPIRED dev in chapter 3).
QUERY = dense.QueryConfig(n_turns=6, decay=0.7, recommender_weight=0.5, history_weight=1.0)
HEAD = dense.HeadConfig(epochs=30, lr=3e-4, weight_decay=1e-2, temperature=0.1)
#: Fusion weights used when no dev data is available: what `fit` chose on INSPIRED's dev split
#: (selection dialogues, seed 0) on 2026-12-02; the dialogue prior needs dev counts, so it is 0.
DEFAULT_WEIGHTS = fusion.FusionWeights(dense=1.0, history=0.0, popularity=0.1, mentioned=3.0)
#: The catalogue-wide baselines as fusions: popularity alone; LRURec alone (popularity breaks
#: its ties where it knows no mentioned movie). Both exclude mentioned movies, as LRURec does.
POPULARITY_ONLY = fusion.FusionWeights(dense=0.0, popularity=1.0, mentioned=-10.0)
LRUREC_ONLY = fusion.FusionWeights(dense=0.0, history=1.0, popularity=1e-3, mentioned=-10.0)
#: Interpolation weights `choose_rerank_weight` tries (0: the retriever's order).
RERANK_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SELECTION_SHARE = 0.3


def dev_file(directory: str | Path | None = None) -> Path | None:
    """INSPIRED's `dev.jsonl`: in `directory`, else where `download.find_dev` finds it
    (`$RAR_LITE_INSPIRED_DEV_DIR`, then the copy `rar-lite download inspired` fetched); None when
    there is none (the callers then fall back to the recorded defaults)."""

    directory = directory or download.find_dev()
    if not directory:
        return None
    path = Path(directory) / "dev.jsonl"
    return path if path.exists() else None


def catalogue(dataset: CikmDataset) -> list[int]:
    """The corpus item ids of the dataset's movies (sorted, unique)."""
    return sorted(set(dataset.entity_to_item.values()))


@dataclass
class RealRetrieval:
    """What `fit` chose on dev data, and the tables that show how."""

    dense: dense.DenseRetriever
    weights: fusion.FusionWeights
    dev: dict[str, int] = field(default_factory=dict)  # sizes of the dev parts
    head_table: pd.DataFrame | None = None  # per epoch: loss, selection NDCG@10
    weight_table: pd.DataFrame | None = None  # the fusion grid on the selection dialogues
    selection: list[Conversation] = field(default_factory=list)
    rerank_weight: float = 0.0  # the reranker's interpolation weight (`choose_rerank_weight`)
    rerank_table: pd.DataFrame | None = None
    counts: dict[int, int] = field(default_factory=dict)  # item -> named in train dialogues
    train: list[Conversation] = field(default_factory=list)  # the head's dev dialogues
    judge: object | None = None  # the reranker tuned on `train` (`real_reranker`), if any
    stage: object | None = None  # the LLM stage chosen on `selection` (`real_reranker`), if any

    def fused(self, served: object | None, corpus: pd.DataFrame,
              weights: fusion.FusionWeights | None = None,
              exclude_history: bool = False) -> fusion.FusedRetriever:
        """The fused retriever (LRURec `served`), with the chosen weights unless given."""
        return fusion.FusedRetriever(self.dense, served, corpus, weights or self.weights,
                                     self.counts, exclude_history)

    def on(self, corpus: pd.DataFrame, item_ids: list[int],
           progress: bool = False) -> RealRetrieval:
        """The same query settings, head and weights over another catalogue."""
        index = dense.item_index(corpus, item_ids, self.dense.encoder, progress)
        moved = dense.DenseRetriever(self.dense.encoder, index, self.dense.config,
                                     self.dense.head, corpus)
        return RealRetrieval(moved, self.weights, self.dev, self.head_table, self.weight_table,
                             self.selection, self.rerank_weight, self.rerank_table, self.counts,
                             self.train, self.judge, self.stage)


def fit(corpus: pd.DataFrame, item_ids: list[int], served: object | None,
        dev: list[Conversation] | None, encoder: dense.TextEncoder | None = None,
        seed: int = 0, progress: bool = False, head: dense.QueryHead | None = None,
        grid: dict[str, tuple[float, ...]] = fusion.GRID, train_head: bool = True) -> RealRetrieval:
    """The dense retriever over the catalogue `item_ids` (cards from `corpus`) and the fusion
    weights, fitted on `dev` conversations whose targets are catalogue items.

    With `train_head` and no `head`, the dev dialogues are split by dialogue: the head is trained
    on the train part, its epoch and the fusion weights chosen on the selection part. Otherwise
    (a `head` trained elsewhere, or none), all of `dev` is the selection set for the weights. Without `dev`: zero-shot
    (or `head`) and `DEFAULT_WEIGHTS`."""
    encoder = encoder or dense.load_encoder()
    index = dense.item_index(corpus, item_ids, encoder, progress)
    base = dense.DenseRetriever(encoder, index, QUERY, head, corpus)
    if not dev:
        return RealRetrieval(base, DEFAULT_WEIGHTS)
    if head is None and train_head:
        train, selection = unicrs.split_by_dialogue(dev, SELECTION_SHARE, seed)
        head, table = _head(base, train, selection, seed, progress)
        base = base.with_head(head)
    else:
        train, selection, table = [], dev, None
    sizes = {"train turns": len(train), "selection turns": len(selection)}
    counts = dialogue_counts(train)
    parts = fusion.components(base, served, corpus, selection, counts=counts)
    weights, weight_table = fusion.choose_weights(parts, dense.targets_in(selection, index),
                                                  grid=grid)
    log.info("fusion weights chosen on %d selection turns: %s", len(selection), weights)
    return RealRetrieval(base, weights, sizes, table, weight_table, selection, counts=counts,
                         train=train)


def dialogue_counts(conversations: list[Conversation]) -> dict[int, int]:
    """Item -> how many distinct dialogues name it (as a target or mentioned), each dialogue
    counted once per item."""
    named: dict[str, set[int]] = {}
    for c in conversations:
        named.setdefault(c.meta.get("dialog_id", c.conversation_id), set()).update(
            (*c.targets, *c.history))
    counts: dict[int, int] = {}
    for items in named.values():
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    return counts


def _head(zero_shot: dense.DenseRetriever, train: list[Conversation],
          selection: list[Conversation], seed: int,
          progress: bool) -> tuple[dense.QueryHead, pd.DataFrame]:
    """The query head trained on `train`, its epoch chosen on `selection` (cached on disk by
    the dialogues, the catalogue and the settings)."""
    config = dense.HeadConfig(**{**asdict(HEAD), "seed": seed})
    record = {"settings": dense.describe(zero_shot.config, config),
              "train": cache.fingerprint([c.to_dict() for c in train]),
              "selection": cache.fingerprint([c.to_dict() for c in selection]),
              "catalogue": cache.fingerprint(zero_shot.index.item_ids.tolist(),
                                             zero_shot.index.vectors.tobytes())}
    directory = cache.cache_dir() / "dense" / f"head-{cache.fingerprint(record)}"
    table_path = directory / "epochs.csv"
    head = dense.load_head(directory, record)
    if head is not None and table_path.exists():
        return head, pd.read_csv(table_path, index_col="epoch")
    index = zero_shot.index
    head, table = dense.train_head(
        zero_shot.raw_queries(train, progress), dense.targets_in(train, index), index, config,
        (zero_shot.raw_queries(selection, progress), dense.targets_in(selection, index)),
        progress=progress)
    dense.save_head(head, directory, record)
    cache.write_text_atomic(table_path, table.to_csv())
    return head, table


def choose_rerank_weight(reranker: object, retriever: object,
                         selection: list[Conversation], k: int = 20,
                         weights: tuple[float, ...] = RERANK_WEIGHTS,
                         progress: bool = False,
                         keep_mentioned: bool = False) -> tuple[float, pd.DataFrame]:
    """The interpolation weight (`rerank.InterpolatedReranker`, with its `keep_mentioned`) with
    the best NDCG@10 on the dev `selection` turns over `retriever`'s top `k`, ties to the smaller
    weight; and the table."""
    rows = []
    for weight in weights:
        run = pipeline.run_pipeline(retriever, InterpolatedReranker(reranker, weight,
                                                                    keep_mentioned),
                                    selection, k=k, progress=progress and weight == weights[-1],
                                    name="choosing the reranker's weight")
        rows.append({"weight": weight, "ndcg@10": float(run.per_pair["ndcg@10"].mean()),
                     "recall@10": float(run.per_pair["recall@10"].mean())})
    table = pd.DataFrame(rows)
    best = table.sort_values(["ndcg@10", "weight"], ascending=[False, True],
                             kind="stable").iloc[0]
    return float(best["weight"]), table.set_index("weight")


#: The table columns of the blend that keeps the mentioned movies in place (`choose_blend`).
KEPT = "mentioned kept"


def blend_ndcg(table: pd.DataFrame, weight: float, keep_mentioned: bool) -> float:
    """NDCG@10 on the selection turns of one blend (its weight and way) in a `choose_blend`
    table."""
    return float(table[f"ndcg@10, {KEPT}" if keep_mentioned else "ndcg@10"].loc[weight])


@dataclass(frozen=True)
class Blend:
    """A reranker's blend with the retriever, chosen on dev selection (`choose_blend`): the
    weight, the way (`keep_mentioned`: the mentioned movies in the retriever's places), and the
    table per weight of both ways (the `KEPT` columns: kept)."""

    weight: float
    keep_mentioned: bool
    table: pd.DataFrame

    def reranker(self, reranker: object) -> InterpolatedReranker:
        """`reranker` blended this way."""
        return InterpolatedReranker(reranker, self.weight, self.keep_mentioned)


def choose_blend(reranker: object, retriever: object, selection: list[Conversation],
                 k: int = 20, weights: tuple[float, ...] = RERANK_WEIGHTS,
                 progress: bool = False) -> Blend:
    """The blend of `reranker` with `retriever`'s top `k` that is best on the dev `selection`
    turns: for each way (over every candidate, or with the mentioned movies kept in the
    retriever's places) the weight of `choose_rerank_weight`; then the way with the better
    NDCG@10, ties to not keeping. A reranker that does not read what was mentioned (a title's
    likelihood, a card) can then leave the retriever's mention signal alone."""
    chosen, tables = {}, {}
    for keep in (False, True):
        chosen[keep], tables[keep] = choose_rerank_weight(
            reranker, retriever, selection, k=k, weights=weights,
            progress=progress and not keep, keep_mentioned=keep)
    keep = bool(tables[True]["ndcg@10"].max() > tables[False]["ndcg@10"].max())
    return Blend(chosen[keep], keep and chosen[keep] > 0,
                 tables[False].join(tables[True].add_suffix(f", {KEPT}")))


def load_dev(dataset: CikmDataset, directory: str | Path | None = None) -> list[Conversation] | None:
    """The dev recommendation turns over `dataset`'s items, or None when no dev file is found."""
    path = dev_file(directory)
    if path is None:
        return None
    conversations, report = unicrs.read_dev(path, dataset)
    if report.unmapped_links:
        log.warning("%d dev movie links are not movies of %s", len(report.unmapped_links),
                    dataset.name)
    return conversations


def ablation(fit: RealRetrieval, served: object | None, corpus: pd.DataFrame,
             conversations: list[Conversation],
             ks: tuple[int, ...] = (20, 50, 100)) -> pd.DataFrame:
    """Each retriever and each part of the fusion on `conversations`: reach@ks (share of targets
    in the top k) and NDCG@10 of the whole-catalogue ranking. Rows: popularity, LRURec, dense
    zero-shot, dense with the head, the fusion, and the fusion without each of its parts."""
    weights = fusion.FusionWeights
    only_dense = weights(1.0, 0.0, 0.0, 0.0)
    rows: dict[str, fusion.FusedRetriever] = {
        "popularity": fit.fused(None, corpus, POPULARITY_ONLY, exclude_history=True),
        "LRURec (the paper's retriever)": fit.fused(served, corpus, LRUREC_ONLY,
                                                    exclude_history=True),
        "dense, zero-shot": fusion.FusedRetriever(fit.dense.with_head(None), None, corpus,
                                                  only_dense),
        "dense, tuned head": fit.fused(None, corpus, only_dense),
        "fused": fit.fused(served, corpus),
    }
    chosen = fit.weights.as_dict()
    for part in ("history", "popularity", "mentioned", "dialogue"):
        if chosen[part]:
            rows[f"fused without {part}"] = fit.fused(served, corpus,
                                                      weights(**{**chosen, part: 0.0}))
    table = {}
    for name, retriever in rows.items():
        scores = retriever.scores(conversations)
        ids = retriever.index.item_ids[np.argsort(-scores, axis=1, kind="stable")[:, :max(ks)]]
        wanted = dense.targets_in(conversations, retriever.index)
        table[name] = {**fusion.reach(ids, conversations, ks),
                       "recall@10": fusion.recall_at(scores, wanted, 10),
                       "ndcg@10": dense.ndcg_at(scores, wanted)}
    return pd.DataFrame(table).T


#: What a chapter prints when the real data is not there (a fresh clone has none).
MISSING_DATA = (
    "INSPIRED is not here: run `rar-lite download inspired` (in the checkout: "
    "`.venv/bin/rar-lite download inspired`) to fetch its test and dev splits, or set "
    "RAR_LITE_INSPIRED_DIR to a directory with He et al.'s test.jsonl, entity2id.json and "
    "item_ids.json and RAR_LITE_INSPIRED_DEV_DIR to one with UniCRS's dev.jsonl (see the README, "
    "'Real data'). Continuing with simulated conversations.")


#: What a chapter prints when its `DATASETS` parameter leaves INSPIRED out.
NOT_ASKED = ("INSPIRED is not in this chapter's DATASETS parameter: continuing with simulated "
             "conversations.")
#: The names a chapter's `DATASETS` parameter may hold: the simulated set and the real ones
#: `download.find_dataset` knows (`harness.DATASETS` is this tuple).
CHAPTER_DATASETS = ("simulated", *download.NAMES)


def chapter_inspired(corpus: pd.DataFrame, datasets: Sequence[str]
                     ) -> tuple[CikmDataset | None, list[Conversation] | None]:
    """INSPIRED for a chapter whose `DATASETS` parameter is `datasets`: (test split, dev turns)
    when "inspired" is asked for and here; otherwise (None, None), or (data, None) without its
    dev split, after printing why (`NOT_ASKED` or `MISSING_DATA`, which says how to get it)."""
    if isinstance(datasets, str):
        raise ValueError(f"DATASETS must be a list of names, e.g. [{datasets!r}], not a string")
    unknown = [d for d in datasets if d not in CHAPTER_DATASETS]
    if unknown:
        raise ValueError(f"DATASETS: unknown dataset {unknown[0]!r}; choose from "
                         f"{', '.join(CHAPTER_DATASETS)}")
    if "inspired" not in datasets:
        print(NOT_ASKED)
        return None, None
    inspired, dev = load_inspired(corpus)
    if inspired is None or not dev:
        print(MISSING_DATA)
    return inspired, dev


def fit_chapter(corpus: pd.DataFrame, served: object,
                fallback: Callable[[], list[Conversation]],
                encoder: dense.TextEncoder | None = None, progress: bool = False,
                data: tuple[CikmDataset | None, list[Conversation] | None] | None = None
                ) -> tuple[RealRetrieval, list[Conversation], pd.DataFrame]:
    """(fit, selection conversations, their corpus) for a chapter: on INSPIRED's catalogue and
    dev dialogues when they are here, else (with `MISSING_DATA` printed) on LRURec `served`'s
    vocabulary and the conversations `fallback()` returns (e.g. simulated validation ones).
    `data`: what `chapter_inspired` returned (it has said why when it is empty)."""
    inspired, dev = data if data is not None else load_inspired(corpus)
    if inspired is not None and dev:
        fit_ = fit(inspired.corpus, catalogue(inspired), served, dev, encoder, progress=progress)
        print(f"INSPIRED: a catalogue of {len(fit_.dense.index):,} movies; dev turns {fit_.dev}")
        return fit_, fit_.selection, inspired.corpus
    if data is None:
        print(MISSING_DATA)
    fit_ = fit(corpus, [int(i) for i in served.vocab.item_ids], served, fallback(), encoder,
               progress=progress)
    return fit_, fit_.selection, corpus


def load_inspired(corpus: pd.DataFrame) -> tuple[CikmDataset | None, list[Conversation] | None]:
    """INSPIRED's test split over `corpus` and its dev turns, where `download.find_dataset` and
    `download.find_dev` find them (the environment variables, then what `rar-lite download
    inspired` fetched); (None, None) when the test split is absent, (data, None) when the dev
    split is absent."""
    from rar_lite.data.cikm import load_cikm

    directory = download.find_dataset("inspired")
    if directory is None or not directory.is_dir():
        return None, None
    data = load_cikm(directory, corpus, skip_bad_lines=True, name="inspired")
    return data, load_dev(data)
