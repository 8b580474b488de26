"""The RAR feedback loop on the conversation-aware retriever (chapter 5; this project's variant).

`rar_lite.loop.feedback` teaches LRURec, which reads only the movies mentioned so far, so nothing
the LLM prefers about the *conversation* can change what it retrieves. This loop teaches the fused
retriever's query head instead (`dense.QueryHead`; the MiniLM encoder, the item cards and the other
fusion components stay frozen). With the starting retriever as π_ref:

Once per conversation (with a single target): the starting retriever's top `pool` items and
the LLM's score of each (`llm_pool_scores`: one pointwise judgement per item, cached). Then
each round:

1. **sample** M ordered sets of K from the pool, Plackett–Luce over the policy's fused scores
   divided by `temperature` (`rar_lite.loop.plackett_luce`);
2. the **LLM's ranking** of a set is its members sorted by the LLM's pool scores;
3. **reward** = NDCG@`reward_k` of the target in that ranking (0 when the set misses it);
   the control arm (`shuffle_rewards`) permutes the rewards among the conversation's sets;
4. **one pair** per conversation: its best set over its worst, when their rewards differ by
   more than `margin`;
5. **DPO** (`rar_lite.loop.dpo`) on the sets' log-probabilities divided by K, Adam with the
   gradient norm clipped at `clip` and a decoupled decay of `weight_decay` towards π_ref's
   parameters (so β → 0 leaves the head where it started);
6. the round's head is **scored on the selection conversations** (`select`, e.g. the fused
   retriever's objective over the whole catalogue); the best round, the start included, is kept
   and restored from its checkpoint.

**Distillation** (`objective="distill"`, this project's variant; it uses no target): each round
instead fits the head's softmax over the *whole catalogue* (temperature `temperature`) to the LLM's
ranking of the pool, softmax(z(LLM scores) / `judge_temperature`) over the pool's items: the
cross-entropy −Σ_pool p_LLM(i) · log π(i). The catalogue in the normaliser keeps the items outside
the pool from rising unseen. (DPO on sets drawn from the fixed pool sees only pool items; measured
on the simulated selection conversations, a DPO loop rewarded by the LLM's view of each set lowered
the catalogue-wide objective round after round.) The control (`shuffle_rewards`) permutes the LLM's
scores within each pool, once.

Rounds are checkpointed (`cache.save_training`: head, optimizer, history); a run killed
between rounds resumes with identical numbers (sampling and batch order are seeded by (seed,
round)).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rar_lite import cache
from rar_lite.data.conversations import Conversation
from rar_lite.loop import dpo, plackett_luce
from rar_lite.retrieval import fusion
from rar_lite.retrieval.dense import QueryHead

SET_PROBS = ("ordered", "unordered")
OBJECTIVES = ("dpo", "distill")
# The distillation's learning rate, chosen like the DPO defaults on the simulated selection
# conversations (1e-4 and 3e-4, over seeds 0-2; 3e-4 was as good or better in every seed).
DISTILL_LR = 3e-4


@dataclass(frozen=True)
class HeadLoopConfig:
    """Settings of the loop on the query head (see the module docstring). The defaults were
    chosen on the simulated *selection* conversations (mean over seeds 0 and 1 of the best
    round's objective, among lr 1e-5...3e-4, β 0.1...1, temperature 1 or 2, margin 0.1 or 0.3,
    M 4 or 8; at lr 1e-3 every round made the head worse)."""

    rounds: int = 8
    sets: int = 8  # M sets per conversation
    k: int = 20  # set size (the reranker's K)
    temperature: float = 1.0  # Plackett–Luce temperature over the fused (z-scored) scores
    margin: float = 0.1  # the least reward gap that makes a pair
    beta: float = 1.0
    lr: float = 1e-4  # Adam moves every entry of the 384x384 head by ~lr per step
    weight_decay: float = 1e-2  # decoupled, towards π_ref's parameters
    clip: float = 1.0  # gradient norm
    epochs: int = 2  # passes over one round's pairs
    batch_size: int = 32
    reward_k: int = 10
    shuffle_rewards: bool = False  # the control arm: rewards permuted within a conversation
    set_prob: str = "ordered"  # "ordered": Plackett–Luce of the sampled order (the paper's);
    # "unordered": Σ log softmax over the pool of the set's items (order-free; shared items cancel)
    objective: str = "dpo"  # "dpo": RAR's, on sampled sets; "distill": the LLM's pool ranking
    # as a soft target over the whole catalogue (see the module docstring)
    judge_temperature: float = 0.5  # distill: softmax temperature over the z-scored LLM scores
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.judge_temperature <= 0:
            raise ValueError(f"judge_temperature must be positive, got {self.judge_temperature}")
        if self.sets < 2:
            raise ValueError(f"sets must be at least 2 to form a pair, got {self.sets}")
        for name in ("rounds", "k", "epochs", "batch_size", "reward_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.temperature <= 0 or self.beta <= 0 or self.lr <= 0:
            raise ValueError("temperature, beta and lr must be positive")
        if self.margin < 0 or self.weight_decay < 0 or self.clip <= 0:
            raise ValueError("margin and weight_decay must be >= 0 and clip > 0")
        if self.set_prob not in SET_PROBS:
            raise ValueError(f"set_prob must be one of {SET_PROBS}, got {self.set_prob!r}")


class HeadScorer:
    """A fused retriever's scores for fixed conversations as a function of the query head:
    `w_dense · z(head(q) · cards) + offsets`, where the offsets (LRURec, priors, mentioned
    movies) do not depend on the head. At the retriever's own head it equals
    `retriever.scores(conversations)`."""

    def __init__(self, retriever: fusion.FusedRetriever,
                 conversations: Sequence[Conversation]) -> None:
        dense = retriever.dense
        self.w_dense = float(retriever.weights.dense)
        self.queries = torch.from_numpy(np.ascontiguousarray(dense.raw_queries(conversations)))
        self.vectors = torch.from_numpy(np.ascontiguousarray(dense.index.vectors))
        own = fusion.standardise(dense.scores(conversations))
        self.offsets = torch.from_numpy(
            (retriever.scores(conversations) - self.w_dense * own).astype("float32"))
        self.empty = self.queries.abs().sum(dim=1) == 0  # no words, no mentions: dense part 0

    def __call__(self, head: QueryHead | None, rows: torch.Tensor | None = None,
                 columns: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (differentiable in `head`) of `rows` (all when None) over the catalogue, or
        over `columns` ((len(rows), P) catalogue positions) when given."""
        rows = torch.arange(len(self.queries)) if rows is None else rows
        queries = self.queries[rows]
        moved = head(queries) if head is not None else queries
        moved = moved.masked_fill(self.empty[rows][:, None], 0.0)
        full = moved @ self.vectors.T
        mean = full.mean(dim=1, keepdim=True)
        std = full.std(dim=1, unbiased=False, keepdim=True)
        z = torch.where(std > 0, (full - mean) / std.clamp_min(1e-12), torch.zeros_like(full))
        scores = self.w_dense * z + self.offsets[rows]
        return scores if columns is None else scores.gather(1, columns)


@dataclass
class LoopData:
    """The loop's fixed inputs: one case per (conversation, target)."""

    conversations: list[Conversation]  # one per case, `targets` = (its target,)
    pools: np.ndarray  # (n, P) catalogue positions, the starting retriever's order
    judge: np.ndarray  # (n, P) the LLM's score of each pool item
    targets: np.ndarray  # (n,) the target's column in the pool, -1 when outside it
    scorer: HeadScorer

    def __len__(self) -> int:
        return len(self.conversations)


def single_targets(conversations: Sequence[Conversation]) -> list[Conversation]:
    """One conversation per (conversation, target) pair, the others dropped from `targets`."""
    return [replace(c, targets=(t,)) for c in conversations for t in c.targets]


def disjoint_splits(conversations: Sequence[Conversation], sizes: dict[str, int],
                    exclude: set[object] = frozenset(),
                    group: Callable[[Conversation], object] = lambda c: c.user_id,
                    seed: int = 0) -> dict[str, list[Conversation]]:
    """Split `conversations` into named parts of about `sizes[name]` conversations each, whole
    groups at a time (a user, a dialogue), groups in `exclude` left out (e.g. the users whose
    targets trained the retriever or the reranker): no group is in two parts. Seeded."""
    by_group: dict[object, list[Conversation]] = {}
    for conversation in conversations:
        key = group(conversation)
        if key not in exclude:
            by_group.setdefault(key, []).append(conversation)
    keys = list(by_group)
    order = np.random.default_rng(seed).permutation(len(keys))
    out: dict[str, list[Conversation]] = {name: [] for name in sizes}
    names = iter(sizes)
    name = next(names, None)
    for n in order:
        while name is not None and len(out[name]) >= sizes[name]:
            name = next(names, None)
        if name is None:
            break
        out[name].extend(by_group[keys[n]])
    return out


def llm_pool_scores(reranker: object) -> Callable[[Conversation, list[int]], np.ndarray]:
    """Scores of candidates in the given order from a pointwise reranker (its `rank` returns
    them sorted with their scores; answers go through its response cache)."""

    def judge(conversation: Conversation, items: list[int]) -> np.ndarray:
        ranking = reranker.rank(conversation, items)
        if ranking.scores is None:
            raise ValueError(f"{getattr(reranker, 'name', reranker)} gives no scores "
                             f"({ranking.failure or 'not a pointwise reranker'})")
        score = dict(zip(ranking.items, ranking.scores))
        return np.array([score[i] for i in items], dtype="float32")

    return judge


def loop_data(retriever: fusion.FusedRetriever, conversations: Sequence[Conversation],
              judge: Callable[[Conversation, list[int]], np.ndarray], pool: int = 40,
              progress: bool = False) -> LoopData:
    """The pools (the retriever's top `pool`, mentioned movies excluded as it excludes them),
    the LLM's scores of them (`judge(conversation, item ids)`) and the target columns."""
    cases = single_targets(conversations)
    if not cases:
        raise ValueError("no conversation has a target")
    ids, _ = retriever.topk_conversations(cases, pool)
    position = retriever.index.position
    pools = np.array([[position[int(i)] for i in row] for row in ids], dtype="int64")
    scores = np.stack([judge(c, [int(i) for i in row]) for c, row in
                       tqdm(list(zip(cases, ids)), desc="the LLM scores the pools",
                            disable=not progress)])
    targets = np.array([int(np.flatnonzero(row == c.targets[0])[0])
                        if c.targets[0] in row else -1 for c, row in zip(cases, ids)])
    return LoopData(cases, pools, scores, targets, HeadScorer(retriever, cases))


def set_rewards(judge: np.ndarray, orders: np.ndarray, target: int, reward_k: int) -> list[float]:
    """The reward of each sampled set (`orders`: (M, K) pool columns): NDCG@`reward_k` of the
    `target` column in the set ranked by the LLM's pool scores `judge` (ties: sampled order)."""
    out = []
    for order in orders:
        ranked = order[np.argsort(-judge[order], kind="stable")]
        out.append(dpo.set_reward(ranked.tolist(), target, reward_k))
    return out


def best_worst_pair(rewards: Sequence[float], margin: float) -> tuple[int, int] | None:
    """(best, worst) set indices when the best reward exceeds the worst by more than `margin`."""
    best, worst = int(np.argmax(rewards)), int(np.argmin(rewards))
    return (best, worst) if rewards[best] - rewards[worst] > margin else None


@dataclass
class Round:
    """One round's sampled sets, rewards and pairs (index into the data's cases)."""

    orders: np.ndarray  # (n, M, K) pool columns
    rewards: np.ndarray  # (n, M)
    pairs: list[tuple[int, int, int]]  # (case, chosen set, rejected set)


def collect(data: LoopData, head: QueryHead, config: HeadLoopConfig, round_: int) -> Round:
    """Steps 1–4 of one round for every case."""
    generator = torch.Generator().manual_seed(config.seed * 1_000 + round_)
    rng = np.random.default_rng([config.seed, round_, 17])
    with torch.no_grad():
        scores = data.scorer(head, columns=torch.from_numpy(data.pools))
    k = min(config.k, data.pools.shape[1])
    orders = plackett_luce.sample(scores, k, config.sets, None, config.temperature,
                                  generator).numpy()
    rewards = np.array([set_rewards(data.judge[n], orders[n], int(data.targets[n]),
                                    config.reward_k) for n in range(len(data))])
    if config.shuffle_rewards:
        rewards = np.stack([rng.permutation(row) for row in rewards])
    pairs = []
    for n, row in enumerate(rewards):
        pair = best_worst_pair(row.tolist(), config.margin)
        if pair is not None:
            pairs.append((n, *pair))
    return Round(orders, rewards, pairs)


def _set_log_probs(scores: torch.Tensor, orders: torch.Tensor, temperature: float,
                   set_prob: str = "ordered") -> torch.Tensor:
    """log π(S) / K of each row's set (pool columns) from the rows' pool scores: Plackett–Luce
    of the sampled order, or ("unordered") the mean log-softmax over the pool of its items."""
    if set_prob == "unordered":
        return torch.log_softmax(scores / temperature, dim=1).gather(1, orders).mean(dim=1)
    return plackett_luce.log_prob(scores, orders, None, temperature) / orders.shape[1]


def _log_probs(data: LoopData, head: QueryHead, rows: torch.Tensor, orders: torch.Tensor,
               temperature: float, set_prob: str = "ordered") -> torch.Tensor:
    """`_set_log_probs` of `head`'s pool scores of `rows`, differentiable in `head`."""
    scores = data.scorer(head, rows, torch.from_numpy(data.pools)[rows])
    return _set_log_probs(scores, orders, temperature, set_prob)


def _step(head: QueryHead, anchor: list[torch.Tensor], loss: torch.Tensor,
          optimizer: torch.optim.Optimizer, config: HeadLoopConfig) -> float:
    """One optimizer step of either objective: the gradient norm clipped at `config.clip`, then a
    decoupled decay towards π_ref's parameters `anchor` (not towards zero). Returns the loss."""
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(head.parameters(), config.clip)
    optimizer.step()
    with torch.no_grad():
        for p, a in zip(head.parameters(), anchor):
            p.sub_(config.lr * config.weight_decay * (p - a))
    return float(loss.detach())


def update(data: LoopData, head: QueryHead, reference: QueryHead, found: Round,
           optimizer: torch.optim.Optimizer, config: HeadLoopConfig,
           round_: int) -> dict[str, float]:
    """Step 5 over the round's pairs: mean DPO loss, the implicit reward margin
    β·((log π − log π_ref)(chosen) − (...)(rejected)) before the update, and the step count."""
    if not found.pairs:
        return {"loss": float("nan"), "margin": float("nan"), "steps": 0}
    generator = torch.Generator().manual_seed(config.seed * 1_000 + round_ + 500)
    anchor = [p.detach().clone() for p in reference.parameters()]
    cases = torch.tensor([n for n, _, _ in found.pairs])
    chosen = torch.from_numpy(found.orders[[n for n, _, _ in found.pairs],
                                           [c for _, c, _ in found.pairs]])
    rejected = torch.from_numpy(found.orders[[n for n, _, _ in found.pairs],
                                             [r for _, _, r in found.pairs]])
    pools = torch.from_numpy(data.pools)
    losses, margins, steps = [], [], 0
    for epoch in range(config.epochs):
        order = torch.randperm(len(cases), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            rows = cases[batch]
            with torch.no_grad():  # each model scores the rows' pools once, for both sides
                ref = data.scorer(reference, rows, pools[rows])
            pol = data.scorer(head, rows, pools[rows])
            ref_c, ref_r, pol_c, pol_r = (
                _set_log_probs(scores, sets[batch], config.temperature, config.set_prob)
                for scores in (ref, pol) for sets in (chosen, rejected))
            if epoch == 0:
                margins.append(float((config.beta * ((pol_c - ref_c) - (pol_r - ref_r)))
                                     .detach().mean()) * len(batch))
            loss = dpo.dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=config.beta).mean()
            losses.append(_step(head, anchor, loss, optimizer, config))
            steps += 1
    return {"loss": float(np.mean(losses)), "margin": sum(margins) / len(cases), "steps": steps}


def judge_targets(data: LoopData, config: HeadLoopConfig) -> torch.Tensor:
    """The distillation targets: per case, softmax over its pool of the z-scored LLM scores at
    `judge_temperature`; with `shuffle_rewards`, the scores are first permuted within each pool
    (seeded: the control)."""
    judge = data.judge.astype("float64")
    if config.shuffle_rewards:
        rng = np.random.default_rng([config.seed, 17])
        judge = np.stack([rng.permutation(row) for row in judge])
    z = fusion.standardise(judge)
    return torch.softmax(torch.from_numpy(z / config.judge_temperature).float(), dim=1)


def distill_update(data: LoopData, head: QueryHead, reference: QueryHead, soft: torch.Tensor,
                   optimizer: torch.optim.Optimizer, config: HeadLoopConfig,
                   round_: int) -> dict[str, float]:
    """One distillation round over every case (`config.epochs` passes): mean cross-entropy
    −Σ_pool soft · log softmax_catalogue(scores / temperature), with the same clipping and decay
    towards π_ref as the DPO update."""
    generator = torch.Generator().manual_seed(config.seed * 1_000 + round_ + 500)
    anchor = [p.detach().clone() for p in reference.parameters()]
    pools = torch.from_numpy(data.pools)
    losses, steps = [], 0
    for _ in range(config.epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            log_p = torch.log_softmax(data.scorer(head, rows) / config.temperature, dim=1)
            loss = -(soft[rows] * log_p.gather(1, pools[rows])).sum(dim=1).mean()
            losses.append(_step(head, anchor, loss, optimizer, config))
            steps += 1
    return {"distill loss": float(np.mean(losses)), "steps": steps}


def agreement(data: LoopData, head: QueryHead) -> float:
    """Mean Spearman correlation, over cases, between the head's scores of the pool and the
    LLM's (ties at their average rank): how far the retriever ranks the pool as the LLM does."""
    import warnings

    from scipy.stats import ConstantInputWarning, spearmanr  # ~0.7 s: only when a loop runs

    with torch.no_grad():
        scores = data.scorer(head, columns=torch.from_numpy(data.pools)).numpy()
    with warnings.catch_warnings():  # a constant row has no correlation: counted as 0
        warnings.simplefilter("ignore", ConstantInputWarning)
        rho = [spearmanr(mine, llm).statistic for mine, llm in zip(scores, data.judge)]
    return float(np.nan_to_num(rho).mean())


def round_stats(data: LoopData, found: Round) -> dict[str, float]:
    """Diagnostics of one round: share of cases that yield a pair, mean reward, mean and
    quartiles of the best−worst reward gap, share of cases with the target in some set, and how
    often the LLM's preferred set of a pair holds the target."""
    gaps = found.rewards.max(axis=1) - found.rewards.min(axis=1)
    has = (found.orders == data.targets[:, None, None]).any(axis=2)  # (n, M); -1 matches none
    chosen_holds = [bool(has[n, c]) for n, c, _ in found.pairs]
    return {"pair share": len(found.pairs) / len(data), "reward": float(found.rewards.mean()),
            "gap mean": float(gaps.mean()), "gap q25": float(np.quantile(gaps, 0.25)),
            "gap q75": float(np.quantile(gaps, 0.75)), "target in a set": float(has.any(1).mean()),
            "chosen holds target": float(np.mean(chosen_holds)) if chosen_holds
            else float("nan")}


@dataclass
class HeadLoopResult:
    head: QueryHead  # the best round's (restored from its checkpoint)
    best_round: int  # 0: the start was best on the selection set
    history: pd.DataFrame  # one row per round (round 0: the start)
    seconds: float


def _digest(*arrays: np.ndarray) -> str:
    """A short SHA-256 of arrays' bytes (what a checkpoint's record pins)."""
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _save(directory: Path, round_: int, head: QueryHead, optimizer: torch.optim.Optimizer,
          record: dict, history: list[dict]) -> None:
    cache.save_training(directory / f"round-{round_:02d}", record, optimizer,
                        {"head.delta": head.delta.detach().clone()}, history=history)


def _load(directory: Path, round_: int, record: dict,
          optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict] | None:
    """(tensors, progress) of a saved round of this run (`optimizer`, when given, restored)."""
    return cache.resume_training(directory / f"round-{round_:02d}", record, optimizer,
                                 needs=("head.delta",))


def run(start: QueryHead, data: LoopData, config: HeadLoopConfig, directory: Path,
        select: Callable[[QueryHead], float], progress: bool = False) -> HeadLoopResult:
    """Run (or resume, or load) the loop from the head `start` (left untouched: a copy is
    trained); `select(head)` scores a head on the selection conversations (higher is better)."""
    directory = Path(directory)
    record = {"config": asdict(config), "start": _digest(start.delta.detach().numpy()),
              "pools": _digest(data.pools, data.judge, data.targets,
                               data.scorer.queries.numpy(), data.scorer.offsets.numpy()),
              "conversations": cache.fingerprint([c.conversation_id
                                                  for c in data.conversations])}
    reference = copy.deepcopy(start).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    head = copy.deepcopy(start).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    history: list[dict] = []
    for round_ in range(config.rounds, 0, -1):  # resume from the newest usable round
        loaded = _load(directory, round_, record, optimizer)
        if loaded is not None:
            tensors, saved = loaded
            with torch.no_grad():
                head.delta.copy_(tensors["head.delta"])
            history = saved["history"]
            break
    distilling = config.objective == "distill"
    soft = judge_targets(data, config) if distilling else None
    if not history:
        history = [{"round": 0, "selection": select(reference), "seconds": 0.0}]
        if distilling:
            history[0]["agreement"] = agreement(data, reference)
    for round_ in tqdm(range(len(history) - 1, config.rounds), desc="feedback rounds",
                       disable=not progress):
        started = time.perf_counter()
        if distilling:
            row = {"round": round_ + 1, **distill_update(data, head, reference, soft, optimizer,
                                                         config, round_),
                   "agreement": agreement(data, head)}
        else:
            found = collect(data, head, config, round_)
            row = {"round": round_ + 1, **round_stats(data, found),
                   **update(data, head, reference, found, optimizer, config, round_)}
        row["selection"] = select(head)
        row["seconds"] = history[-1]["seconds"] + time.perf_counter() - started
        history.append(row)
        _save(directory, round_ + 1, head, optimizer, record, history)
    table = pd.DataFrame(history)
    best = int(table.sort_values(["selection", "round"], ascending=[False, True],
                                 kind="stable").iloc[0]["round"])
    chosen = copy.deepcopy(start)
    if best > 0:
        loaded = _load(directory, best, record)
        if loaded is None:
            raise RuntimeError(f"the checkpoint of round {best} in {directory} is gone")
        with torch.no_grad():
            chosen.delta.copy_(loaded[0]["head.delta"])
    return HeadLoopResult(chosen.eval(), best, table.set_index("round"),
                          float(table["seconds"].iloc[-1]))


def selection_objective(scorer: HeadScorer, targets: list[list[int]],
                        k: int = 20) -> Callable[[QueryHead], float]:
    """`select` for `run`: the fused retriever's `fusion.objective` (mean of NDCG@10 and
    recall@`k` over the whole catalogue) on the selection conversations of `scorer`."""

    def select(head: QueryHead) -> float:
        with torch.no_grad():
            scores = scorer(head).numpy()
        return fusion.objective(scores, targets, k)["objective"]

    return select
