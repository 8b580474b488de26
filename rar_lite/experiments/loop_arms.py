"""The feedback loop on the conversation-aware retriever as a controlled experiment (chapter 5,
`scripts/bench_feedback.py`): seven arms, paired on the same seeds and test conversations.

- (a) RAR-SFT: the fused retriever with its supervised query head, no loop;
- (b) the same head trained further with cross-entropy on the loop conversations' targets,
  without the LLM ("is it just more data?");
- (c) the DPO loop (`head_loop`) from (a);
- (d) the DPO loop from (b);
- (e) the loop from (a) with the rewards shuffled among each conversation's sets (a control that
  must not help);
- (f) the distillation loop from (a) (`head_loop`'s `objective="distill"`, this project's
  variant): the head learns the LLM's ranking of each pool, no target used;
- (g) (f) with the LLM's scores shuffled within each pool (its control).

Three disjoint sets: the *loop* conversations (targets that never trained the retriever or the
reranker), the *selection* conversations (the epoch of (b) and the round of (c)–(e) are chosen
on them) and the untouched *test* conversations. Simulated (`simulated_parts`): validation
positions of users whose conversations did not train the query head, split by user; test
conversations of the other users. INSPIRED: the dev dialogues that trained neither the head nor the
judge (the fusion's selection dialogues), split by dialogue; He et al.'s test split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rar_lite import cache, stats
from rar_lite.backends.llm import ResponseCache
from rar_lite.data.conversations import Conversation
from rar_lite.dialogue import realdata
from rar_lite.loop import head_loop, pipeline
from rar_lite.reranking import rerank
from rar_lite.retrieval import dense, fusion

if TYPE_CHECKING:
    from rar_lite.experiments.profiles import Profile

ARMS = {
    "a": "RAR-SFT (no loop)",
    "b": "SFT + cross-entropy on the loop targets",
    "c": "DPO loop from (a)",
    "d": "DPO loop from (b)",
    "e": "loop from (a), shuffled rewards",
    "f": "distillation loop from (a)",
    "g": "distillation from (a), shuffled LLM scores",
}
DIFFS = (("c", "a"), ("d", "b"), ("e", "a"), ("f", "a"), ("g", "a"))


@dataclass(frozen=True)
class Sizes:
    """How many conversations each part gets (simulated) and the pool the LLM scores."""

    loop: int = 250
    selection: int = 150  # simulated: what is left after the loop (121 users)
    test: int = 300
    pool: int = 40
    n_dense: int = 300  # chapter 3's simulated conversations for the SFT head
    real_test: int | None = None  # INSPIRED test turns (None: all)


@dataclass
class ArmSetup:
    """One dataset's fixed parts: the SFT retriever (arm a), the three sets, the LLM judge (its
    own scores) and the full pipeline's reranker."""

    name: str
    retriever: fusion.FusedRetriever
    loop: list[Conversation]
    selection: list[Conversation]
    test: list[Conversation]
    judge: rerank.PointwiseReranker
    reranker: object  # what the full pipeline reranks with
    sizes: Sizes
    notes: dict = field(default_factory=dict)


def _lrurec(profile: Profile, progress: bool) -> tuple[pd.DataFrame, object, object]:
    """(corpus, simulated sets, chapter 3's LRURec) — the same cached artifacts the chapters use."""
    from rar_lite.experiments import artifacts

    setup = artifacts.loop_setup(0, profile, progress=progress)
    return setup.corpus, setup.sets, setup.served


def simulated_setup(profile: str | Profile = "full", responses: ResponseCache | None = None,
                    encoder: object | None = None, progress: bool = False) -> ArmSetup:
    """The simulated dataset at `profile`'s sizes (`Profile.arms`): chapter 3's LRURec and dense
    fit (on the first `n_dense` validation conversations), chapter 4's tuned pointwise reranker,
    and the three sets."""
    from rar_lite.experiments import artifacts, profiles

    profile = profiles.get(profile)
    sizes = profile.arms
    corpus, sets, served = _lrurec(profile, progress)
    fit = realdata.fit(corpus, [int(i) for i in served.vocab.item_ids], served,
                       sets.valid[:sizes.n_dense], encoder, progress=progress)
    sft = fit.fused(served, corpus)
    tuned = artifacts.chapter_backend(profile, sets=sets)
    tuning = artifacts.training_conversations(sets, profile.tune_conversations, seed=0)
    parts = simulated_parts(sets.valid, sets.test, sets.valid[:sizes.n_dense], tuning, sizes)
    judge = rerank.PointwiseReranker(tuned, corpus, response_cache=responses or ResponseCache())
    weight, _ = realdata.choose_rerank_weight(judge, sft, parts["selection"], progress=progress)
    tuned_users = {c.user_id for c in tuning}
    return ArmSetup("simulated", sft, parts["loop"], parts["selection"], parts["test"], judge,
                    rerank.InterpolatedReranker(judge, weight), sizes,
                    {"rerank weight": weight,
                     "loop users in the reranker's tuning set": sum(
                         c.user_id in tuned_users for c in parts["loop"])})


def simulated_parts(valid: list[Conversation], test: list[Conversation],
                    head: list[Conversation], tuning: list[Conversation],
                    sizes: Sizes) -> dict[str, list[Conversation]]:
    """Loop and selection conversations: validation positions of users whose conversations did
    not train the query head (`head`), split by user; test conversations: of the other users.
    A validation target is never a training label: LRURec and the reranker's tuning (`tuning`)
    use training positions only, and the head's users are left out. (Users outside the tuning
    set too would leave too few: chapter 4 tunes on 550 of the 671 users.)"""
    labels = {(c.user_id, t) for c in tuning for t in c.targets}
    fresh = [c for c in valid if not any((c.user_id, t) in labels for t in c.targets)]
    parts = head_loop.disjoint_splits(fresh, {"loop": sizes.loop, "selection": sizes.selection},
                                      {c.user_id for c in head})
    used = {c.user_id for part in parts.values() for c in part}
    parts["test"] = head_loop.disjoint_splits(test, {"test": sizes.test}, used, seed=1)["test"]
    return parts


def inspired_setup(profile: str | Profile = "full", responses: ResponseCache | None = None,
                   progress: bool = False,
                   data: tuple[object, list[Conversation] | None] | None = None
                   ) -> ArmSetup | None:
    """INSPIRED at `profile`'s sizes (None when its files are not here): chapter 4's fit on the
    dev dialogues and its judge that reads real seekers (`artifacts.chapter_judge`, cached),
    the fusion's selection dialogues split by dialogue into loop and selection halves, and the
    test split.
    `data`: (dataset, dev turns) already loaded (`realdata.chapter_inspired`)."""
    from rar_lite.data.corpus import load_corpus
    from rar_lite.experiments import artifacts, profiles

    profile = profiles.get(profile)
    sizes = profile.arms
    inspired, dev = data if data is not None else realdata.load_inspired(load_corpus())
    if inspired is None or not dev:
        return None
    _, _, served = _lrurec(profile, progress)
    fit, judge = artifacts.chapter_judge(served, profile, progress=progress,
                                              data=(inspired, dev))
    sft = fit.fused(served, inspired.corpus)
    responses = responses or ResponseCache()
    dialogue = (lambda c: c.meta.get("dialog_id", c.conversation_id))
    half = len(fit.selection) // 2
    parts = head_loop.disjoint_splits(fit.selection, {"loop": min(half, sizes.loop),
                                                      "selection": min(len(fit.selection) - half,
                                                                       sizes.selection)},
                                      group=dialogue)
    test = inspired.conversations[:sizes.real_test]
    reader = judge.reranker(inspired.corpus, responses)
    return ArmSetup("inspired", sft, parts["loop"], parts["selection"], test, reader,
                    judge.blended(inspired.corpus, responses), sizes,
                    {"rerank weight": judge.weight, "judge step": judge.step})


@dataclass
class ArmsResult:
    """Per arm and seed: the head, the loop history (arms c–e), and per test pair the
    retriever's and the full pipeline's NDCG@10."""

    setup: ArmSetup
    seeds: tuple[int, ...]
    heads: dict[tuple[str, int], dense.QueryHead]
    histories: dict[tuple[str, int], pd.DataFrame]
    retriever_ndcg: dict[tuple[str, int], pd.Series]
    pipeline_ndcg: dict[tuple[str, int], pd.Series]
    best_rounds: dict[tuple[str, int], int]
    arms: tuple[str, ...] = tuple(ARMS)  # the arms that were run


def _directory(setup: ArmSetup, arm: str, seed: int, *parts: object) -> Path:
    key = cache.fingerprint(setup.name, arm, seed, [c.conversation_id for c in setup.loop],
                            [c.conversation_id for c in setup.selection], *parts)
    return cache.cache_dir() / "head_loop" / f"{setup.name}-{arm}-{key}"


def run_arms(setup: ArmSetup, seeds: tuple[int, ...] = (0, 1, 2),
             config: head_loop.HeadLoopConfig = head_loop.HeadLoopConfig(),
             progress: bool = False, arms: tuple[str, ...] = tuple(ARMS)) -> ArmsResult:
    """The `arms` (arm a always; the others as named) on every seed (loops cached per round),
    evaluated on the test conversations. The distillation arms (f, g) take `config` with
    `objective="distill"` and `head_loop.DISTILL_LR`."""
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; the arms are {sorted(ARMS)}")
    wanted = {"a", *arms} | ({"b"} if "d" in arms else set())
    sft = setup.retriever
    start = sft.dense.head or dense.QueryHead(sft.dense.index.vectors.shape[1])
    select_scorer = head_loop.HeadScorer(sft, setup.selection)
    select = head_loop.selection_objective(select_scorer, dense.targets_in(setup.selection,
                                                                            sft.index))
    judge = head_loop.llm_pool_scores(setup.judge)
    data_a = head_loop.loop_data(sft, setup.loop, judge, setup.sizes.pool, progress)
    loop_cases = data_a.conversations
    raw = sft.dense.raw_queries(loop_cases)
    heads, histories, best = {}, {}, {}
    distill = replace(config, objective="distill", lr=head_loop.DISTILL_LR)
    for seed in seeds:
        heads["a", seed] = start
        loops = {"c": (start, data_a, config),
                 "e": (start, data_a, replace(config, shuffle_rewards=True)),
                 "f": (start, data_a, distill),
                 "g": (start, data_a, replace(distill, shuffle_rewards=True))}
        if "b" in wanted:
            ce = dense.HeadConfig(**{**asdict(realdata.HEAD), "seed": seed})
            heads["b", seed], histories["b", seed] = dense.train_head(
                raw, dense.targets_in(loop_cases, sft.index), sft.index, ce, init=start,
                select=select)
            best["b", seed] = int(histories["b", seed]["selection ndcg@10"].idxmax())
        if "d" in wanted:
            data_b = head_loop.loop_data(sft.with_head(heads["b", seed]), setup.loop, judge,
                                         setup.sizes.pool, progress)
            loops["d"] = (heads["b", seed], data_b, config)
        for arm, (begin, data, arm_config) in sorted(loops.items()):
            if arm not in wanted:
                continue
            arm_config = replace(arm_config, seed=seed)
            directory = _directory(setup, arm, seed, asdict(arm_config),
                                   head_loop._digest(begin.delta.detach().numpy()))
            result = head_loop.run(begin, data, arm_config, directory, select)
            heads[arm, seed], histories[arm, seed] = result.head, result.history
            best[arm, seed] = result.best_round
    keys = {run: head_loop._digest(head.delta.detach().numpy()) for run, head in heads.items()}
    distinct = {}  # arm a is the same head on every seed, and it is evaluated once
    for (arm, seed), key in keys.items():
        distinct.setdefault(key, (arm, seed, heads[arm, seed]))
    served = {key: sft.with_head(head) for key, (_, _, head) in distinct.items()}
    pools = {key: pipeline.retrieve(one, setup.test) for key, one in served.items()}
    pipeline.prescore(setup.reranker, setup.test, list(pools.values()), progress)
    evaluated: dict[str, tuple[pd.Series, pd.Series]] = {}
    for key, (arm, seed, _) in distinct.items():
        alone = pipeline.run_pipeline(served[key], rerank.RetrieverOrder(), setup.test,
                                      candidates=pools[key])
        full = pipeline.run_pipeline(served[key], setup.reranker, setup.test, progress=progress,
                                     name=f"arm {arm}, seed {seed}: the full pipeline",
                                     candidates=pools[key])
        evaluated[key] = (alone.per_pair["ndcg@10"], full.per_pair["ndcg@10"])
    retriever_ndcg = {run: evaluated[key][0] for run, key in keys.items()}
    pipeline_ndcg = {run: evaluated[key][1] for run, key in keys.items()}
    return ArmsResult(setup, tuple(seeds), heads, histories, retriever_ndcg, pipeline_ndcg, best,
                      tuple(arm for arm in ARMS if arm in wanted))


def _by_arm(values: dict[tuple[str, int], pd.Series], seeds: tuple[int, ...],
            arms: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per arm: each test pair's value averaged over the seeds."""
    return {arm: np.mean([values[arm, s].to_numpy() for s in seeds], axis=0) for arm in arms}


def arms_table(result: ArmsResult) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(table, diffs): per arm the full pipeline's and the retriever's NDCG@10 (mean over test
    pairs of the seed-averaged values, and the std of the per-seed means); `diffs` the paired
    differences `c-a`, `d-b`, `e-a`, `f-a`, `g-a` (of the arms run) of the full pipeline's
    NDCG@10 as fractions of the second arm's mean, with paired bootstrap 95% intervals
    (`stats.paired_relative`), and the same for the retriever alone under `retriever`."""
    rows = {}
    for arm in result.arms:
        label = ARMS[arm]
        full = [result.pipeline_ndcg[arm, s].mean() for s in result.seeds]
        alone = [result.retriever_ndcg[arm, s].mean() for s in result.seeds]
        rows[arm] = {"arm": label, "ndcg@10": float(np.mean(full)),
                     "ndcg@10 std over seeds": float(np.std(full, ddof=1)) if len(full) > 1
                     else float("nan"),
                     "retriever ndcg@10": float(np.mean(alone)),
                     "kept round or epoch, per seed": ", ".join(
                         str(result.best_rounds.get((arm, s), 0)) for s in result.seeds)}
    full = _by_arm(result.pipeline_ndcg, result.seeds, result.arms)
    alone = _by_arm(result.retriever_ndcg, result.seeds, result.arms)
    pairs = [(x, y) for x, y in DIFFS if x in result.arms and y in result.arms]
    diffs = {f"{x}-{y}": stats.paired_relative(full[y], full[x]) for x, y in pairs}
    diffs["retriever"] = {f"{x}-{y}": stats.paired_relative(alone[y], alone[x])
                          for x, y in pairs}
    return pd.DataFrame(rows).T, diffs


def loop_curves(result: ArmsResult) -> pd.DataFrame:
    """The per-round diagnostics of the loop arms (c–g), one row per (arm, seed, round)."""
    frames = [history.reset_index().assign(arm=arm, seed=seed)
              for (arm, seed), history in result.histories.items() if arm != "b"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def describe(table: pd.DataFrame, diffs: dict[str, dict], dataset: str) -> str:
    """Sentences on the measured differences (computed, never assumed)."""
    lines = []
    for name, words in (("c-a", "the loop against RAR-SFT"),
                        ("d-b", "the loop against the same amount of supervised data"),
                        ("e-a", "the shuffled-reward control against RAR-SFT"),
                        ("f-a", "the distillation loop against RAR-SFT"),
                        ("g-a", "the distillation control (shuffled LLM scores) against RAR-SFT")):
        if name not in diffs:
            continue
        d = diffs[name]
        lo, hi = d["ci95"]
        if not np.isfinite(d["mean"]):
            lines.append(f"{dataset}: {words}: {d['absolute']:+.4f} NDCG@10 (the baseline "
                         "scores 0, so no relative change can be given).")
            continue
        verdict = ("a gain" if lo > 0 else "a loss" if hi < 0 else "within noise")
        lines.append(f"{dataset}: {words}: {d['mean']:+.1%} NDCG@10 of the full pipeline "
                     f"(95% interval {lo:+.1%} to {hi:+.1%}): {verdict}.")
    return "\n".join(lines)
