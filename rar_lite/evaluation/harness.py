"""Chapter 6: RAR against its baselines, on simulated and real conversations.

`evaluate(config)` runs named systems on named conversation sets and returns an `Evaluation`:
per-(conversation, target) metrics for every system and seed, every ranking (with what an LLM
wrote that resolved to nothing), run times, and a cost table timed with an empty LLM cache.
`Evaluation.save(directory)` writes them as CSV/JSON/JSONL; `rar-lite evaluate` does both.

Systems (`SYSTEMS`): popularity; the chapter-3 LRURec retriever alone (the paper's retriever); the
dense retriever over the conversation and the item cards, and its fusion with LRURec and a
popularity prior (this project's, `rar_lite.dialogue.realdata`); the LLM without retrieval; RAR
with the LRURec retriever (retrieve K, the chapter-4 tuned pointwise reranker orders them: the
faithful row); RAR with the fused retriever (the reranker's score interpolated with the retriever's
order at a weight chosen on dev data; on real data with dev dialogue, the reranker is the one tuned
on that dialogue, `rar_lite.dialogue.real_reranker`); RAR after the chapter-5 feedback loop; the
keyword rule over LRURec's candidates; and RAR in generation mode (the zero-shot LLM writes titles;
slow, so run on `n_generate` conversations, to measure grounding). Seeded systems (everything built
on a trained LRURec) run once per seed.

Conversation sets: "simulated" (held-out test users, data seed 0) and the CIKM-format real sets
("inspired" by default, read with `load_cikm`; on real data the history is the movies mentioned
so far). On a real set every retriever ranks the dataset's whole catalogue (its `item_ids.json`
movies, as He et al. rank over the dataset's names), so no target is unreachable by construction;
on the simulated set they rank LRURec's vocabulary. The dense retriever's head and every weight are
chosen on dev data: INSPIRED's dev dialogues for real sets, simulated validation conversations for
the simulated set — never on a test split. Metrics are per pair; the "recommendation" condition
keeps the pairs whose target was not mentioned before, "all" keeps every pair (He et al., CIKM
2023). Popularity and LRURec exclude mentioned movies (on "all" a repeated target is then a miss
by design); the dense and fused retrievers may return them, with a weight chosen on dev data.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rar_lite import cache, stats
from rar_lite.backends import backbones
from rar_lite.backends.llm import Backend, ResponseCache
from rar_lite.backends.llm_local import TransformersBackend
from rar_lite.data import cikm, popularity, simulate
from rar_lite.data.conversations import Conversation
from rar_lite.data.corpus import load_corpus
from rar_lite.data.matching import TitleMatcher
from rar_lite.dialogue import real_reranker, realdata
from rar_lite.evaluation.baselines import OpenRecommender, PopularityRecommender
from rar_lite.experiments import artifacts, profiles
from rar_lite.loop import pipeline
from rar_lite.reranking import rerank
from rar_lite.retrieval import dense, fusion

#: System key -> display name, in the order tables list them.
SYSTEMS: dict[str, str] = {
    "popularity": "Popularity",
    "retriever": "Retriever only (SFT)",
    "dense": "Dense retriever (ours)",
    "fused": "Fused retriever (ours)",
    "llm": "LLM without retrieval",
    "keyword": "Keyword reranker",
    "rar-sft": "RAR, SFT retriever",
    "rar-fused": "RAR, fused retriever (ours)",
    "rar-loop": "RAR after the feedback loop",
    "rar-generate": "RAR, generation mode (zero-shot)",
}
#: Systems that depend on a trained LRURec, run once per seed.
SEEDED = ("retriever", "fused", "keyword", "rar-sft", "rar-fused", "rar-loop")
#: Systems on the zero-shot backbone (`EvalConfig.llm`), and on chapter 4's tuned SmolLM2.
ZERO_SHOT = ("llm", "rar-generate")
TUNED = ("rar-sft", "rar-fused", "rar-loop")
#: Systems that need the dense retriever.
DENSE = ("dense", "fused", "rar-fused")
#: "simulated", then the CIKM-format datasets (`load_cikm`): INSPIRED is the default real set;
#: ReDial and Reddit-Movie are read from a directory the reader supplies.
DATASETS = realdata.CHAPTER_DATASETS
CONDITIONS = ("all", "recommendation")
#: He et al. (CIKM 2023), Table 2/3: zero-shot LLMs on INSPIRED, "all" condition, their protocol
#: (the LLM writes 20 names, each matched to the nearest entity name; no retrieval, no corpus).
REFERENCE = {
    "GPT-4, zero-shot (He et al. 2023)": {"recall@1": 0.0909, "recall@5": 0.1581,
                                          "recall@10": 0.1937, "recall@20": 0.2609,
                                          "ndcg@10": 0.1371},
    "GPT-3.5, zero-shot (He et al. 2023)": {"recall@1": 0.0514, "recall@5": 0.1067,
                                            "recall@10": 0.1502, "recall@20": 0.2055,
                                            "ndcg@10": 0.0925},
}


def system_name(system: str, backbone: str | None = None) -> str:
    """The display name of `system`'s row; a row of a further backbone (`EvalConfig.more_llms`)
    names it: "LLM without retrieval (openai:gpt-5-mini)"."""
    return SYSTEMS[system] if backbone is None else f"{SYSTEMS[system]} ({backbone})"


def row_order(names: object) -> list[str]:
    """Display names in table order: `SYSTEMS` order, each system's further-backbone rows right
    after its own row, anything else last."""
    names = list(dict.fromkeys(names))
    ordered = []
    for base in SYSTEMS.values():
        ordered += [n for n in names if n == base]
        ordered += sorted(n for n in names if n.startswith(f"{base} ("))
    return ordered + [n for n in names if n not in ordered]


@dataclass
class EvalConfig:
    """What to evaluate; defaults are the chapter's full run. `profile` names the
    `profiles.Profile` whose cached artifacts (retrievers, tuned reranker, loop, judge) the
    systems use; `EvalConfig.from_profile` also takes its sizes."""

    systems: tuple[str, ...] = tuple(SYSTEMS)
    datasets: tuple[str, ...] = ("simulated", "inspired")
    seeds: tuple[int, ...] = (0, 1, 2)
    k: int = 20  # candidates retrieved, and the length of every ranking
    ks: tuple[int, ...] = (1, 5, 10, 20)
    n_simulated: int = 200  # held-out simulated test conversations (seeded sample)
    n_real: int | None = None  # turns of each real dataset (None: all)
    n_generate: int = 10  # conversations per set for RAR in generation mode (seed 0)
    n_cost: int = 5  # simulated conversations timed with an empty LLM cache
    llm_tokens: int = 128  # new tokens for the LLM without retrieval (10 titles need ~120)
    generation_tokens: int = 96  # new tokens for RAR in generation mode (5 titles)
    n_selection_simulated: int = 200  # simulated validation conversations choosing the weights
    profile: str = "full"  # `profiles.PROFILES`: the sizes of the chapters' cached artifacts
    llm: str = backbones.DEFAULT  # the LLM without retrieval and generation mode (`backbones`)
    more_llms: tuple[str, ...] = ()  # further backbones: each adds its own rows of those two
    llm_concurrency: int = 8  # requests in flight to an API model
    data_dirs: dict[str, str] | None = None  # name -> directory; default $RAR_LITE_<NAME>_DIR
    dev_dir: str | None = None  # INSPIRED's dev split; default $RAR_LITE_INSPIRED_DEV_DIR

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown system {unknown[0]!r}; choose from {', '.join(SYSTEMS)}")
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
        if not self.systems or not self.datasets or not self.seeds:
            raise ValueError("at least one system, one dataset and one seed are needed")
        profiles.get(self.profile)  # an unknown name fails here
        self.llm = str(backbones.parse(self.llm))
        if isinstance(self.more_llms, str):
            raise ValueError(f"more_llms must be a sequence of specs, got {self.more_llms!r}")
        self.more_llms = tuple(str(backbones.parse(spec)) for spec in self.more_llms)
        if len({self.llm, *self.more_llms}) != 1 + len(self.more_llms):
            raise ValueError(f"a backbone is named twice in llm={self.llm!r} and "
                             f"more_llms={list(self.more_llms)}")
        if not isinstance(self.llm_concurrency, int) or self.llm_concurrency < 1:
            raise ValueError(f"llm_concurrency must be an integer >= 1, got "
                             f"{self.llm_concurrency!r}")
        if max(self.ks) > self.k:
            raise ValueError(f"metrics at {max(self.ks)} need rankings of k >= {max(self.ks)}")
        self.systems, self.datasets = tuple(self.systems), tuple(self.datasets)
        self.seeds, self.ks = tuple(int(s) for s in self.seeds), tuple(self.ks)

    @classmethod
    def from_profile(cls, profile: str | profiles.Profile, **overrides: object) -> EvalConfig:
        """The run at `profile`'s sizes (QUICK: a few minutes, every system and set; CI's): its
        `k` candidates, the metrics' cut-offs up to it."""
        chosen = profiles.get(profile)
        k = int(overrides.get("k", chosen.k))
        sizes = {"k": k, "ks": tuple(cut for cut in cls.ks if cut <= k)}
        return cls(**{**sizes, **chosen.evaluation, "profile": chosen.name, **overrides})

    def sizes(self) -> profiles.Profile:
        """The profile of the chapters' artifacts this run reuses."""
        return profiles.get(self.profile)


@dataclass
class ConversationSet:
    """A named conversation set, the corpus its ids refer to, a title matcher over it, the
    catalogue its retrievers rank and the dense retriever fitted for it (see `_fit_dense`)."""

    name: str
    conversations: list[Conversation]
    corpus: pd.DataFrame
    matcher: TitleMatcher
    catalogue: list[int] | None = None  # None: LRURec's vocabulary
    retrieval: realdata.RealRetrieval | None = None
    dataset: cikm.CikmDataset | None = None  # a real set as loaded


@dataclass
class Evaluation:
    """Results of `evaluate` (see the module docstring).

    `per_pair`: one row per (dataset, system, seed, conversation, target): columns dataset,
    system, seed, conversation_id, target, new (target not mentioned before), bucket
    (head/torso/tail), NDCG/Recall@ks. `rankings`: one record per (dataset, system, seed,
    conversation): items, candidates, hallucinated names, failure. `timing`: seconds per
    conversation as run (LLM answers may come from the cache). `cost`: seconds, LLM prompts and
    tokens per conversation with an empty cache. `counts`: training interactions per item.
    `backbones`: system -> the LLM it runs on (`backbones.label`; "—" without one).
    """

    config: EvalConfig
    per_pair: pd.DataFrame
    rankings: list[dict]
    timing: pd.DataFrame
    cost: pd.DataFrame
    counts: pd.Series
    seconds: float = 0.0
    #: per set: what the dense retriever's fit chose (weights, reranker weight, dev sizes) and
    #: the retrieval ablation on the set's conversations (`realdata.ablation`)
    fits: dict[str, dict] = field(default_factory=dict)
    ablations: dict[str, pd.DataFrame] = field(default_factory=dict)
    backbones: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> list[str]:
        return [c for c in self.per_pair.columns if c.startswith(("ndcg@", "recall@"))]

    def summary(self, dataset: str, condition: str = "all",
                metrics: list[str] | None = None) -> pd.DataFrame:
        """Systems × metrics: mean over pairs (seed-averaged per pair), standard error, 95% CI,
        and the std over seeds of the per-seed means."""
        return summary(self.per_pair, dataset, condition, metrics or self.metrics())

    def paired(self, dataset: str, a: str, b: str, metric: str = "ndcg@10",
               condition: str = "all") -> dict[str, float]:
        """Paired test of system `a` against `b` on the same pairs (see `stats.paired_test`)."""
        return paired(self.per_pair, dataset, a, b, metric, condition)

    def save(self, directory: Path | str) -> Path:
        """Write per_pair.csv, rankings.jsonl, timing.csv, cost.csv, summary.csv and
        results.json (config, machine, summaries) into `directory` (atomically, file by file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cache.write_text_atomic(directory / "per_pair.csv", self.per_pair.to_csv(index=False))
        cache.write_text_atomic(directory / "rankings.jsonl", "".join(
            json.dumps(r) + "\n" for r in self.rankings))
        cache.write_text_atomic(directory / "timing.csv", self.timing.to_csv(index=False))
        cache.write_text_atomic(directory / "cost.csv", self.cost.to_csv())  # index: system
        tables = {f"{d}/{c}": self.summary(d, c) for d in self.per_pair["dataset"].unique()
                  for c in CONDITIONS}
        frame = pd.concat(tables, names=["set", "system"])
        cache.write_text_atomic(directory / "summary.csv", frame.to_csv())
        record = {"config": asdict(self.config), "seconds": self.seconds,
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                  "summary": {key: json.loads(t.to_json(orient="index"))
                              for key, t in tables.items()}}
        record["fits"] = self.fits
        record["backbones"] = self.backbones
        for name, table in self.ablations.items():
            cache.write_text_atomic(directory / f"retrieval_{name}.csv", table.to_csv())
        cache.write_text_atomic(directory / "results.json", json.dumps(record, indent=1))
        return directory


# --- statistics over the per-pair table ------------------------------------------------------

def _select(per_pair: pd.DataFrame, dataset: str, condition: str) -> pd.DataFrame:
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    rows = per_pair[per_pair["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"no results for dataset {dataset!r}")
    return rows[rows["new"]] if condition == "recommendation" else rows


def _pair_means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Per-pair value averaged over seeds, indexed by (conversation_id, target)."""
    return rows.groupby(["conversation_id", "target"], sort=True)[metric].mean()


def summary(per_pair: pd.DataFrame, dataset: str, condition: str,
            metrics: list[str]) -> pd.DataFrame:
    """See `Evaluation.summary`; rows in table order (`row_order`)."""
    rows = _select(per_pair, dataset, condition)
    out = {}
    for system in row_order(rows["system"]):
        mine = rows[rows["system"] == system]
        record: dict[str, float] = {"pairs": float(mine.groupby(["conversation_id",
                                                                 "target"]).ngroups),
                                    "seeds": float(mine["seed"].nunique())}
        for metric in metrics:
            ci = stats.mean_ci(_pair_means(mine, metric).to_numpy())
            per_seed = mine.groupby("seed")[metric].mean()
            record.update({metric: ci["mean"], f"{metric} se": ci["se"],
                           f"{metric} ci low": ci["low"], f"{metric} ci high": ci["high"],
                           f"{metric} seed std": per_seed.std(ddof=1) if len(per_seed) > 1
                           else np.nan})
        out[system] = record
    return pd.DataFrame(out).T


def paired(per_pair: pd.DataFrame, dataset: str, a: str, b: str, metric: str = "ndcg@10",
           condition: str = "all", seed: int = 0) -> dict[str, float]:
    """Paired test of system `a` against `b` (display names or keys) on their common pairs."""
    rows = _select(per_pair, dataset, condition)
    a, b = SYSTEMS.get(a, a), SYSTEMS.get(b, b)
    first = _pair_means(rows[rows["system"] == a], metric)
    second = _pair_means(rows[rows["system"] == b], metric)
    common = first.index.intersection(second.index)
    if common.empty:
        raise ValueError(f"{a!r} and {b!r} share no pairs on {dataset!r}")
    return stats.paired_test(first[common].to_numpy(), second[common].to_numpy(), seed=seed)


def bucket_table(per_pair: pd.DataFrame, dataset: str, metric: str = "ndcg@10",
                 condition: str = "all") -> pd.DataFrame:
    """Mean `metric` by target-popularity bucket (columns) for each system (rows), with the
    number of pairs per bucket as the last row."""
    rows = _select(per_pair, dataset, condition)
    table = rows.pivot_table(index="system", columns="bucket", values=metric, aggfunc="mean")
    table = table.reindex(index=row_order(table.index),
                          columns=[b for b in popularity.BUCKETS if b in table.columns])
    sizes = rows.drop_duplicates(["conversation_id", "target"])["bucket"].value_counts()
    table.loc["pairs (targets)"] = sizes.reindex(table.columns).to_numpy()
    return table


def recommended_popularity(evaluation: Evaluation, dataset: str, top: int = 10) -> pd.DataFrame:
    """Long table (system, interactions) of the popularity of each system's top-`top`
    recommendations, plus the ground truth ("targets") — the data of the bias plot."""
    counts = evaluation.counts
    rows = []
    for record in evaluation.rankings:
        if record["dataset"] != dataset:
            continue
        for item in record["items"][:top]:
            rows.append((record["system"], float(counts.get(item, 0.0))))
    targets = evaluation.per_pair[evaluation.per_pair["dataset"] == dataset].drop_duplicates(
        ["conversation_id", "target"])["target"]
    rows += [("targets (ground truth)", float(counts.get(t, 0.0))) for t in targets]
    return pd.DataFrame(rows, columns=["system", "interactions"])


def grounding_table(evaluation: Evaluation) -> pd.DataFrame:
    """Per dataset and system: names (or items) recommended, the share resolving to no corpus
    movie (hallucinated), and the share of real movies outside the retrieved candidates."""
    rows = {}
    for record in evaluation.rankings:
        key = (record["dataset"], record["system"])
        row = rows.setdefault(key, {"recommended": 0, "hallucinated": 0, "outside": 0,
                                    "has candidates": record["candidates"] is not None})
        if record["named"] is not None:  # an LLM wrote names
            row["recommended"] += record["named"]
            row["hallucinated"] += len(record["hallucinated"])
            row["outside"] += record["outside"]
        else:
            row["recommended"] += len(record["items"])
            if record["candidates"] is not None:
                pool = set(record["candidates"])
                row["outside"] += sum(i not in pool for i in record["items"])
    table = pd.DataFrame(rows).T
    table.index.names = ["dataset", "system"]
    recommended = table["recommended"].astype(float).clip(lower=1)
    table["hallucination rate"] = table["hallucinated"].astype(float) / recommended
    table["outside-candidates rate"] = np.where(table["has candidates"],
                                                table["outside"].astype(float) / recommended,
                                                np.nan)
    return table.drop(columns=["has candidates"])


# --- running the systems ---------------------------------------------------------------------

@dataclass
class _Seeded:
    """What the seeded systems of one seed need."""

    setup: artifacts.LoopSetup
    loop_model: object


def _rows(system: str, zero_shot: Backend | None,
          more: dict[str, Backend]) -> list[tuple[str | None, Backend | None]]:
    """The rows `system` gets: (None, the zero-shot backbone), then, for a zero-shot system,
    (spec, backend) for each further backbone."""
    return [(None, zero_shot), *(more.items() if system in ZERO_SHOT else ())]


def data_dir(config: EvalConfig, name: str) -> str:
    """Where a real dataset lives: `config.data_dirs[name]`, else `download.find_dataset`
    (`$RAR_LITE_<NAME>_DIR`, e.g. RAR_LITE_INSPIRED_DIR, then the copy `rar-lite download`
    fetched); a FileNotFoundError saying how to get it when there is none."""
    from rar_lite.data import download

    directory = (config.data_dirs or {}).get(name) or download.find_dataset(name)
    if not directory:
        raise FileNotFoundError(f"{name} not found: {download.how_to_get(name)}, pass "
                                f"data_dirs={{{name!r}: ...}} (a directory with test.jsonl, "
                                "entity2id.json, item_ids.json) or set "
                                f"{download.dataset_env(name)}")
    return str(directory)


def available_datasets(datasets: tuple[str, ...],
                       data_dirs: dict[str, str] | None = None) -> tuple[str, ...]:
    """`datasets` without the real ones whose directory is not configured or not there (each
    dropped one is reported on stdout with how to get it): a fresh clone runs on simulated data."""
    kept = []
    for name in datasets:
        if name == "simulated":
            kept.append(name)
            continue
        try:
            directory = data_dir(EvalConfig(datasets=(name,), data_dirs=data_dirs), name)
        except FileNotFoundError as error:
            print(f"{error}. Skipping {name} (the README's 'Real data' says where to get it).")
            continue
        if Path(directory).is_dir():
            kept.append(name)
        else:
            print(f"{name}: {directory} is not a directory; skipping it.")
    return tuple(kept)


def conversation_sets(config: EvalConfig, corpus: pd.DataFrame, matcher: TitleMatcher,
                      simulated_test: list[Conversation]) -> list[ConversationSet]:
    """The configured conversation sets (real ones from `data_dir`). `matcher` is over
    `corpus`."""
    out = []
    for name in config.datasets:
        if name == "simulated":
            chosen = artifacts.sample_conversations(simulated_test, config.n_simulated)
            out.append(ConversationSet(name, chosen, corpus, matcher))
            continue
        directory = data_dir(config, name)
        data = cikm.load_cikm(directory, corpus, skip_bad_lines=True, name=name)
        chosen = data.conversations[: config.n_real] if config.n_real else data.conversations
        out.append(ConversationSet(name, chosen, data.corpus, TitleMatcher(data.corpus),
                                   realdata.catalogue(data), dataset=data))
    return out


def _fit_dense(config: EvalConfig, corpus: pd.DataFrame, sets: list[ConversationSet],
               served: object, valid: list[Conversation], tuned: TransformersBackend | None,
               responses: ResponseCache | None, rerank_weight: bool, progress: bool) -> None:
    """Fit the dense retriever of every set in place (`ConversationSet.retrieval`): for real
    sets on INSPIRED's dev dialogues (head and weights; the recorded defaults when no dev split
    is found), for the simulated set (only when a dense system runs: there LRURec ranks without
    it) with that head and weights chosen on simulated validation
    conversations. LRURec `served` (the first seed's) takes part in choosing the weights; with
    `rerank_weight`, the tuned reranker's interpolation weight is chosen on the same selection
    conversations (`realdata.choose_rerank_weight`); on real dev dialogue the judge is tuned
    there instead, and the LLM stage (its blend or the title likelihood's) chosen there too
    (`real_reranker.choose_stage`)."""
    encoder = dense.load_encoder()

    def with_weight(fit: realdata.RealRetrieval, on_corpus: pd.DataFrame) -> None:
        if rerank_weight and fit.train and fit.selection:  # real dev dialogue: tune on it
            retriever = fit.fused(served, on_corpus)
            fit.judge = real_reranker.tune_on_dialogue(
                retriever, on_corpus, fit.train, fit.selection, config.sizes().dialogue,
                response_cache=responses, progress=progress)
            titles = real_reranker.title_check(retriever, on_corpus, fit.selection, k=config.k,
                                               response_cache=responses, progress=progress)
            fit.stage = real_reranker.choose_stage(fit.judge, titles)
            fit.rerank_weight, fit.rerank_table = fit.stage.chosen.weight, fit.stage.table
        elif rerank_weight and tuned is not None and fit.selection:
            reader = rerank.PointwiseReranker(tuned, on_corpus, response_cache=responses)
            fit.rerank_weight, fit.rerank_table = realdata.choose_rerank_weight(
                reader, fit.fused(served, on_corpus), fit.selection, config.k,
                progress=progress)

    real = [data for data in sets if data.dataset is not None]
    real_fit = None
    if real:
        inspired = next((d.dataset for d in real if d.name == "inspired"), None)
        if inspired is None:
            inspired = _inspired(config, corpus)
        dev = realdata.load_dev(inspired, config.dev_dir) if inspired is not None else None
        turns = config.sizes().dev_turns
        dev = dev[:turns] if dev and turns else dev
        fitted_on = inspired if dev else real[0].dataset
        real_fit = realdata.fit(fitted_on.corpus, realdata.catalogue(fitted_on), served, dev,
                                encoder, progress=progress)
        with_weight(real_fit, fitted_on.corpus)
        for data in real:
            data.retrieval = real_fit.on(data.corpus, data.catalogue, progress)
    for data in sets:
        if data.dataset is None and set(DENSE) & set(config.systems):
            selection = artifacts.sample_conversations(valid, config.n_selection_simulated)
            data.retrieval = realdata.fit(
                data.corpus, [int(i) for i in served.vocab.item_ids], served, selection,
                encoder, progress=progress, head=real_fit.dense.head if real_fit else None,
                grid={**fusion.GRID, "mentioned": (-10.0,), "dialogue": (0.0,)},
                train_head=False)
            with_weight(data.retrieval, data.corpus)


def _inspired(config: EvalConfig, corpus: pd.DataFrame) -> cikm.CikmDataset | None:
    """INSPIRED over `corpus` (the item space of its dev split), or None when it is absent."""
    try:
        directory = data_dir(config, "inspired")
    except FileNotFoundError:
        return None
    return cikm.load_cikm(directory, corpus, skip_bad_lines=True, name="inspired")


def _ranking_record(dataset: str, system: str, seed: int, conversation: Conversation,
                    ranking: rerank.Ranking, candidates: list[int] | None, k: int) -> dict:
    llm_named = ranking.raw is not None
    return {"dataset": dataset, "system": system, "seed": seed,
            "conversation_id": conversation.conversation_id,
            "items": [int(i) for i in ranking.items[:k]],
            "candidates": None if candidates is None else [int(i) for i in candidates],
            "named": (len(ranking.listed) + len(ranking.hallucinated) + len(ranking.outside))
            if llm_named else None,
            "hallucinated": list(ranking.hallucinated),
            "outside": len(ranking.outside), "failure": ranking.failure}


def _retriever(system: str, data: ConversationSet, seeded: _Seeded,
               popular: PopularityRecommender) -> object:
    """What retrieves the candidates of `system` on `data` (see the module docstring)."""
    served = seeded.setup.served
    if system == "rar-loop":
        served = served.with_model(seeded.loop_model)
    fit = data.retrieval
    if system in DENSE:
        if system == "dense":
            exclude = -10.0 if data.dataset is None else 0.0
            return fit.fused(None, data.corpus, fusion.FusionWeights(1.0, 0.0, 0.0, exclude))
        return fit.fused(served, data.corpus)
    if data.dataset is None:  # the simulated set: LRURec's vocabulary, as in chapters 3-5
        return popular if system == "popularity" else served
    if system == "popularity":
        return fit.fused(None, data.corpus, realdata.POPULARITY_ONLY, exclude_history=True)
    return fit.fused(served, data.corpus, realdata.LRUREC_ONLY, exclude_history=True)


def _reranker_for(system: str, data: ConversationSet, reranker: object,
                  generation: object) -> object:
    """What reorders `system`'s candidates on `data` (`reranker`: the tuned pointwise one;
    `generation`: the zero-shot generation-mode one)."""
    if system in ("popularity", "retriever", "dense", "fused"):
        return rerank.RetrieverOrder()
    if system == "keyword":
        return rerank.KeywordReranker(data.corpus)
    if system in ("rar-sft", "rar-loop"):
        return reranker
    if system == "rar-fused":  # on real data the LLM stage chosen on dev dialogue, if any
        stage = data.retrieval.stage
        return (rerank.InterpolatedReranker(reranker, data.retrieval.rerank_weight)
                if stage is None else stage.reranker(data.corpus,
                                                     getattr(reranker, "cache", None)))
    return generation  # rar-generate


@dataclass
class _Run:
    """One system's run on one set, retrieved and not yet reranked."""

    name: str  # its row's display name
    seed: int
    conversations: list[Conversation]
    chosen: object  # what reranks (or, for "llm", the recommender that writes titles)
    candidates: list[list[int]] | None  # None: no retrieval ("llm")
    seconds: float  # time spent so far (retrieval)


def _retrieved(system: str, name: str, seed: int, data: ConversationSet, seeded: _Seeded,
               chosen: object, popular: PopularityRecommender, config: EvalConfig) -> _Run:
    """`system`'s run on `data` with its candidates retrieved."""
    began = time.perf_counter()
    if system == "llm":
        return _Run(name, seed, data.conversations, chosen, None, 0.0)
    conversations = (data.conversations[: config.n_generate] if system == "rar-generate"
                     else data.conversations)
    served = _retriever(system, data, seeded, popular)
    with warnings.catch_warnings():  # real data: many mentioned movies are not in the vocab
        warnings.simplefilter("ignore", UserWarning)
        candidates = pipeline.retrieve(served, conversations, config.k)
    return _Run(name, seed, conversations, chosen, candidates,
                time.perf_counter() - began)


#: The timing row of the LLM scoring shared by the RAR rows (`_prescore`).
SHARED_SCORING = "(RAR rows' candidates, scored once)"


def _prescore(runs: list[_Run], dataset: str, progress: bool) -> list[dict]:
    """Score, once per conversation, the union of the candidates of every run whose reranker
    reads the same pointwise judge (`pipeline.prescore`): the RAR rows of all seeds then read
    their scores from the answer cache. Returns one timing row per judge that was run."""
    groups: dict[int, tuple[object, list[_Run]]] = {}
    for run in runs:
        judge = pipeline.pointwise_judge(run.chosen)
        if judge is not None and run.candidates is not None:
            groups.setdefault(id(judge), (judge, []))[1].append(run)
    timing = []
    for judge, members in groups.values():
        if len(members) < 2 or any(m.conversations is not members[0].conversations
                                   for m in members):
            continue  # nothing shared, or not the same conversations
        began = time.perf_counter()
        scored = pipeline.prescore(judge, members[0].conversations,
                                   [m.candidates for m in members], progress)
        if scored:
            timing.append({"dataset": dataset, "system": SHARED_SCORING, "seed": -1,
                           "conversations": scored,
                           "s / conversation": (time.perf_counter() - began) / scored})
    return timing


def _reranked(run: _Run, data: ConversationSet, progress: bool
              ) -> tuple[list[Conversation], list[rerank.Ranking], list[list[int]] | None]:
    """(conversations, rankings, candidates or None) of `run`, its time added to its seconds."""
    began = time.perf_counter()
    if run.candidates is None:
        rankings = run.chosen.recommend(run.conversations, progress)
    else:
        quick = isinstance(run.chosen, (rerank.RetrieverOrder, rerank.KeywordReranker))
        rankings = rerank.rank_all(run.chosen, run.conversations, run.candidates,
                                   progress and not quick, desc=f"{data.name}: {run.name}")
    run.seconds += time.perf_counter() - began
    return run.conversations, rankings, run.candidates


def _llm_systems(tuned: TransformersBackend | None, zero_shot: Backend | None,
                 corpus: pd.DataFrame, matcher: TitleMatcher, responses: ResponseCache | None,
                 llm_tokens: int = 128, generation_tokens: int = 96
                 ) -> tuple[object, object, object]:
    """(pointwise RAR reranker, generation-mode reranker, LLM without retrieval); None where
    the backend they need was not loaded."""
    pointwise = (rerank.PointwiseReranker(tuned, corpus, response_cache=responses)
                 if tuned is not None else None)
    if zero_shot is None:
        return pointwise, None, None
    generation = rerank.GenerationReranker(zero_shot, corpus, matcher,
                                           max_new_tokens=generation_tokens,
                                           response_cache=responses)
    return pointwise, generation, OpenRecommender(zero_shot, matcher, n=10,
                                                  max_new_tokens=llm_tokens,
                                                  response_cache=responses)


def _score_run(dataset: str, system: str, seed: int, conversations: list[Conversation],
               rankings: list[rerank.Ranking], candidates: list[list[int]] | None,
               buckets: pd.Series, config: EvalConfig,
               seconds: float) -> tuple[pd.DataFrame, list[dict], dict]:
    """One system's run on one set, scored: (per-pair rows with the "new" flag and popularity
    bucket, one ranking record per conversation, the timing row)."""
    frame = pipeline.score_rankings(conversations, rankings, candidates, config.ks,
                                    config.k).reset_index()
    mentioned = {c.conversation_id: set(c.history) for c in conversations}
    frame["new"] = [t not in mentioned[c] for c, t in zip(frame["conversation_id"],
                                                         frame["target"])]
    frame["bucket"] = [buckets.get(t, popularity.BUCKETS[-1]) for t in frame["target"]]
    records = [_ranking_record(dataset, system, seed, c, r,
                               None if candidates is None else candidates[n], config.k)
               for n, (c, r) in enumerate(zip(conversations, rankings))]
    timing = {"dataset": dataset, "system": system, "seed": seed,
              "conversations": len(conversations),
              "s / conversation": seconds / max(1, len(conversations))}
    return frame.assign(dataset=dataset, system=system, seed=seed), records, timing


def evaluate(config: EvalConfig | None = None, progress: bool = True) -> Evaluation:
    """Run every configured system on every configured set (see the module docstring); trained
    models (retrievers, the tuned adapter, feedback loops) come from the cache when chapters 3–5
    already built them."""
    config = config or EvalConfig()
    started = time.perf_counter()
    corpus = load_corpus()
    sizes = config.sizes()
    cache.say("simulated conversations (chapter 2)", progress)
    sets = simulate.simulated_sets(corpus, seed=artifacts.DATA_SEED, progress=progress)
    setups = {}
    for seed in config.seeds:
        cache.say(f"LRURec, seed {seed} (chapter 3)", progress)
        setups[seed] = artifacts.loop_setup(seed, sizes, progress=progress, sets=sets)
    first = setups[config.seeds[0]]
    matcher = TitleMatcher(corpus)
    vocab = first.served.vocab
    counts = pd.Series(first.served.popularity, index=vocab.item_ids, name="interactions")
    buckets = popularity.buckets(counts)
    needs_llm = set(ZERO_SHOT + TUNED) & set(config.systems)
    tuned = None
    if set(TUNED) & set(config.systems):
        cache.say("the tuned pointwise reranker (chapter 4)", progress)
        tuned = artifacts.chapter_backend(sizes, sets, progress)
    zero_shot, more = None, {}
    if set(ZERO_SHOT) & set(config.systems):
        zero_shot, *others = (backbones.load(spec, concurrency=config.llm_concurrency)
                              for spec in (config.llm, *config.more_llms))
        more = dict(zip(config.more_llms, others))
    responses = ResponseCache() if needs_llm else None
    popular = PopularityRecommender(counts)
    reader = (rerank.PointwiseReranker(tuned, corpus, response_cache=responses)
              if tuned is not None else None)  # RAR's reranker, also the loop's reader
    seeded: dict[int, _Seeded] = {}
    for seed, setup in setups.items():
        loop_model = None
        if "rar-loop" in config.systems:
            cache.say(f"the feedback loop, seed {seed} (chapter 5)", progress)
            loop = artifacts.run_feedback(
                setup, reader, sizes.loop_config(seed),
                sizes.loop_train, progress=progress)
            loop_model = loop.model
        seeded[seed] = _Seeded(setup, loop_model)

    chosen_sets = conversation_sets(config, corpus, matcher, sets.test)
    if set(DENSE) & set(config.systems) or any(d.dataset is not None for d in chosen_sets):
        cache.say("the dense retriever and its weights, chosen on dev data", progress)
        _fit_dense(config, corpus, chosen_sets, first.served, sets.valid, tuned, responses,
                   "rar-fused" in config.systems, progress)
    fits, ablations = {}, {}
    for data in chosen_sets:
        if data.retrieval is not None:
            fit = data.retrieval
            stage = fit.stage
            fits[data.name] = {"weights": fit.weights.as_dict(),
                               "rerank_weight": fit.rerank_weight,
                               "mentioned_kept": bool(stage and stage.chosen.keep_mentioned),
                               "dev": fit.dev,
                               "head": fit.dense.head is not None,
                               "reranker": "chapter 4's" if stage is None else
                               f"{stage.name} (judge tuned on dev dialogue, step "
                               f"{fit.judge.step})",
                               **({} if stage is None else {"selection ndcg@10": {
                                   k: round(v, 4) for k, v in stage.ndcg.items()}})}
            ablations[data.name] = realdata.ablation(fit, first.served, data.corpus,
                                                     data.conversations)
    pairs, records, timing = [], [], []
    for data in chosen_sets:
        pointwise = (rerank.PointwiseReranker(tuned, data.corpus, response_cache=responses)
                     if tuned is not None else None)
        runs = []
        for system in config.systems:
            seeds = config.seeds if system in SEEDED else config.seeds[:1]
            for backbone, backend in _rows(system, zero_shot, more):
                _, generation, opener = _llm_systems(None, backend, corpus, data.matcher,
                                                     responses, config.llm_tokens,
                                                     config.generation_tokens)
                chosen = (opener if system == "llm" else
                          _reranker_for(system, data, pointwise, generation))
                runs += [_retrieved(system, system_name(system, backbone), seed, data,
                                    seeded[seed], chosen, popular, config) for seed in seeds]
        timing += _prescore(runs, data.name, progress)
        for run in runs:
            reranked = _reranked(run, data, progress)
            frame, run_records, row = _score_run(data.name, run.name, run.seed, *reranked,
                                                 buckets, config, run.seconds)
            pairs.append(frame)
            records += run_records
            timing.append(row)
    per_pair = pd.concat(pairs, ignore_index=True)
    front = ["dataset", "system", "seed", "conversation_id", "target", "new", "bucket"]
    per_pair = per_pair[front + [c for c in per_pair.columns if c not in front]]
    simulated = next((d.retrieval for d in chosen_sets if d.name == "simulated"), None)
    cache.say("the cost of a new conversation, with an empty LLM cache", progress)
    cost = cost_table(config, seeded[config.seeds[0]], matcher, tuned, zero_shot, popular,
                      simulated, more)
    return Evaluation(config, per_pair, records, pd.DataFrame(timing), cost, counts,
                      time.perf_counter() - started, fits, ablations,
                      system_backbones(config.systems, tuned, zero_shot, more))


def system_backbones(systems: tuple[str, ...], tuned: Backend | None,
                     zero_shot: Backend | None,
                     more: dict[str, Backend] | None = None) -> dict[str, str]:
    """Display name -> the LLM each row runs on: the zero-shot backbone (`EvalConfig.llm`) for
    the LLM without retrieval and generation mode (and each further backbone for its own rows,
    `more`: spec -> backend), chapter 4's tuned SmolLM2 for the pointwise RAR rows, "—" for
    systems without an LLM."""
    out = {}
    for system in systems:
        for backbone, row_backend in _rows(system, zero_shot, more or {}):
            used = row_backend if system in ZERO_SHOT else tuned if system in TUNED else None
            out[system_name(system, backbone)] = backbones.label(used) if used is not None else "—"
    return out


def cost_table(config: EvalConfig, seeded: _Seeded, matcher: TitleMatcher,
               tuned: TransformersBackend | None, zero_shot: Backend | None,
               popular: PopularityRecommender,
               retrieval: realdata.RealRetrieval | None = None,
               more: dict[str, Backend] | None = None) -> pd.DataFrame:
    """Seconds, LLM prompts and tokens (prompt and completion: the API's `usage` fields, or the
    tokenizer's count for a local model) per conversation of each row (a system, and a zero-shot
    system on each further backbone in `more`) on `config.n_cost` simulated conversations, with a
    new, empty response cache (what a new conversation costs); the dense systems use the
    simulated set's `retrieval` and are left out without it."""
    conversations = artifacts.sample_conversations(seeded.setup.sets.test, config.n_cost,
                                                    seed=1)
    corpus = seeded.setup.corpus
    data = ConversationSet("simulated", conversations, corpus, matcher, retrieval=retrieval)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(system, backbone, backend) for system in config.systems
                if not (system in DENSE and retrieval is None)
                for backbone, backend in _rows(system, zero_shot, more or {})]
        for n, (system, backbone, backend) in enumerate(runs):  # a new empty cache each:
            empty = ResponseCache(Path(tmp) / f"{n}.sqlite")  # no row reuses another's work
            pointwise, generation, opener = _llm_systems(tuned, backend, corpus, data.matcher,
                                                         empty, config.llm_tokens,
                                                         config.generation_tokens)
            used = [b for b in (tuned, backend) if b is not None]
            before = [b.usage.copy() for b in used]
            began = time.perf_counter()
            chosen = (opener if system == "llm" else
                      _reranker_for(system, data, pointwise, generation))
            run = _retrieved(system, system_name(system, backbone), config.seeds[0], data,
                             seeded, chosen, popular, config)
            done, _, _ = _reranked(run, data, progress=False)
            seconds = (time.perf_counter() - began) / len(done)
            spent = [b.usage.since(start) for b, start in zip(used, before)]
            rows.append({"system": system_name(system, backbone), "conversations": len(done),
                         "s / conversation": seconds,
                         "LLM prompts / conversation": empty.misses / len(done),
                         "prompt tokens / conversation": sum(u.prompt_tokens for u in spent)
                         / len(done),
                         "completion tokens / conversation": sum(u.completion_tokens
                                                                 for u in spent) / len(done)})
    return pd.DataFrame(rows).set_index("system")


def overhead(cost: pd.DataFrame) -> str:
    """The paper's limitation ("the LLM component incurs significant overhead") in this run's
    numbers: each LLM system's seconds and tokens per conversation against the retriever
    alone, from `cost_table`."""
    base_name = SYSTEMS["retriever"]
    base = cost.loc[base_name, "s / conversation"] if base_name in cost.index else None
    lines = ["The paper names its limitation: the LLM component incurs significant overhead. "
             "Measured here with an empty cache, per conversation:"]
    for system, row in cost.iterrows():
        tokens = row["prompt tokens / conversation"] + row["completion tokens / conversation"]
        if tokens <= 0:
            continue
        than = (f", {row['s / conversation'] / base:.0f}x the retriever alone "
                f"({base:.3f} s)" if base else "")
        lines.append(f"- {system}: {row['s / conversation']:.2f} s, "
                     f"{row['LLM prompts / conversation']:.0f} prompts, "
                     f"{row['prompt tokens / conversation']:.0f} prompt and "
                     f"{row['completion tokens / conversation']:.0f} completion tokens{than}.")
    return "\n".join(lines) if len(lines) > 1 else "No system in this run used an LLM."


def main_table(evaluation: Evaluation, dataset: str, condition: str = "all",
               metrics: tuple[str, ...] = ("ndcg@5", "ndcg@10", "recall@5", "recall@10"),
               references: bool = False) -> pd.DataFrame:
    """The chapter's results table: systems × metrics as "mean ± 95% CI half-width" strings;
    with `references`, He et al.'s zero-shot GPT numbers as extra rows (their protocol)."""
    table = evaluation.summary(dataset, condition, list(metrics))
    out = pd.DataFrame(index=table.index)
    for metric in metrics:
        half = (table[f"{metric} ci high"] - table[f"{metric} ci low"]) / 2
        out[metric] = [f"{m:.4f} ± {h:.4f}" if np.isfinite(h) else f"{m:.4f}"
                       for m, h in zip(table[metric], half)]
    out["pairs"] = table["pairs"].astype(int).astype(object)  # the reference rows hold "—"
    out["seeds"] = table["seeds"].astype(int).astype(object)
    out["backbone"] = [evaluation.backbones.get(system, "—") for system in out.index]
    if references:
        for name, values in REFERENCE.items():
            out.loc[name] = [f"{values[m]:.4f}" if m in values else "—" for m in metrics] + [
                "—", "—", name.split(",")[0]]
    return out


def reach_table(evaluation: Evaluation) -> pd.DataFrame:
    """Per dataset: pairs, the share of targets the retriever can return at all (in its
    vocabulary: MovieLens items with training interactions), the share mentioned before, and the
    SFT retriever's candidate recall@k (seed mean) — what bounds every retrieval-based system."""
    rows = {}
    recall = f"candidate recall@{evaluation.config.k}"
    for dataset, frame in evaluation.per_pair.groupby("dataset", sort=False):
        pairs = frame.drop_duplicates(["conversation_id", "target"])
        row = {"pairs": len(pairs),
               "targets in the retriever's vocabulary": pairs["target"].isin(
                   evaluation.counts.index).mean(),
               "targets mentioned before": 1.0 - pairs["new"].mean()}
        sft = frame[frame["system"] == SYSTEMS["retriever"]]
        if recall in frame and not sft.empty:
            row[recall + " (SFT retriever)"] = sft[recall].mean()
        rows[dataset] = row
    return pd.DataFrame(rows).T


def findings(evaluation: Evaluation, metric: str = "ndcg@10") -> str:
    """Sentences on the main comparisons, written from the measured tables (never assumed)."""
    lines = []
    for dataset in evaluation.per_pair["dataset"].unique():
        table = evaluation.summary(dataset, "all", [metric])
        present = set(table.index)
        for key, base in (("rar-sft", "retriever"), ("rar-loop", "retriever"),
                          ("keyword", "retriever"), ("dense", "retriever"),
                          ("fused", "dense"), ("rar-fused", "fused"),
                          ("rar-fused", "popularity")):
            if {SYSTEMS[key], SYSTEMS[base]} <= present:
                test = evaluation.paired(dataset, key, base, metric)
                label = "retriever only" if base == "retriever" else SYSTEMS[base]
                lines.append(f"{dataset}: " + stats.describe_paired(test, SYSTEMS[key], label,
                                                                    metric))
    grounding = grounding_table(evaluation)
    for (dataset, system), row in grounding.iterrows():
        if row["hallucination rate"] > 0 or system.startswith(SYSTEMS["llm"]):
            lines.append(f"{dataset}: {system} — {row['hallucination rate']:.1%} of "
                         f"{int(row['recommended'])} named titles resolve to no corpus movie.")
    return "\n".join(lines)
