"""The RAR feedback loop (chapter 5): the LLM's rankings teach the retriever, with online DPO.

For each training conversation, with the current retriever π and a frozen copy π_ref of the
supervised (chapter-3) retriever:

1. **sample** M ordered candidate sets of size K from π's Plackett–Luce distribution (scores /
   temperature, the user's history excluded; `rar_lite.loop.plackett_luce`);
2. the **LLM reranks** each set in the light of the conversation (any chapter-4 reranker; the
   pointwise one scores the union of the sets once, through its response cache);
3. **reward** = NDCG@k of the held-out target in the LLM's ranking, 0 when the set missed it;
4. **pairs**: a set with a higher reward is chosen over one with a lower reward, ties give none.
   When every set missed the target, `missing="skip"` drops the conversation and
   `missing="insert"` puts the target in the last slot of the first set (this project's option,
   not the paper's), so the pair teaches the retriever to retrieve it;
5. **update** π with the DPO loss on the sets' Plackett–Luce log-probabilities
   (`rar_lite.loop.dpo`), plus optionally `sft_weight` × the cross-entropy of the target;
6. **iterate**: resample with the updated retriever for `rounds` rounds.

Each round is checkpointed (model, optimizer, history) in `directory/round-NN`; a loop killed
mid-round resumes from the last completed round with identical results (sampling and shuffling
are seeded by (seed, round); dropout is off).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rar_lite import cache
from rar_lite.data.conversations import Conversation
from rar_lite.loop import dpo, plackett_luce
from rar_lite.reranking import rerank
from rar_lite.retrieval.retriever import score_histories
from rar_lite.retrieval.seqrec import ItemVocab, SequentialRecommender, pad_right

MISSING = ("skip", "insert")


@dataclass(frozen=True)
class LoopConfig:
    """Feedback-loop settings (defaults: the chapter-5 CPU run)."""

    rounds: int = 3
    sets: int = 2  # M sampled sets per conversation
    k: int = 20  # set size
    temperature: float = 0.5  # measured: at 1.0 two sets share ~2 of 20 items, at 0.5 ~8
    beta: float = 0.1
    lr: float = 5e-4
    epochs: int = 2  # passes over one round's pairs
    batch_size: int = 16  # pairs per step
    sft_weight: float = 0.0
    missing: str = "skip"
    reward_k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.missing not in MISSING:
            raise ValueError(f"missing must be one of {MISSING}, got {self.missing!r}")
        if self.sets < 2:
            raise ValueError("at least 2 sets per conversation are needed to form a pair")
        if self.rounds < 1 or self.k < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError("rounds, k, batch_size and epochs must be positive")


@dataclass
class Feedback:
    """One conversation's round: the sampled sets (corpus ids, sampled order), the LLM's
    rankings, the rewards and the (chosen, rejected) pairs."""

    conversation: Conversation
    history: list[int]  # vocabulary indices (1-based)
    sets: list[list[int]]
    rankings: list[list[int]]
    rewards: list[float]
    pairs: list[tuple[int, int]]
    inserted: bool = False
    failures: list[str] = field(default_factory=list)


def rank_sets(reranker: object, conversation: Conversation,
              sets: Sequence[Sequence[int]]) -> list[rerank.Ranking]:
    """The reranker's ranking of each set (one call for all sets where it supports it)."""
    if hasattr(reranker, "rank_sets"):
        return reranker.rank_sets(conversation, sets)
    return [reranker.rank(conversation, list(s)) for s in sets]


def _allowed(histories: list[list[int]], n_items: int) -> torch.Tensor:
    allowed = torch.ones(len(histories), n_items, dtype=torch.bool)
    for row, history in enumerate(histories):
        allowed[row, [i - 1 for i in history]] = False
    return allowed


def _scores(model: SequentialRecommender, histories: list[list[int]]) -> torch.Tensor:
    return model.score(model.last_hidden(pad_right(histories, model.config.max_len)))



def inclusion_by_rank(model: SequentialRecommender, vocab: ItemVocab, history: Sequence[int],
                      k: int, temperatures: Sequence[float], target: int | None = None,
                      n_samples: int = 2000, seed: int = 0
                      ) -> tuple[dict[float, np.ndarray], int | None]:
    """What step 1 samples for one history: per temperature, the chance that the retriever's
    item at each rank (history excluded, best first) lands in a set of `k`
    (`plackett_luce.inclusion_probabilities`); and the 1-based rank of `target` (None when it is
    not in the vocabulary or is in the history)."""
    encoded = vocab.encode(list(history))
    scores = score_histories(model, [encoded])
    allowed = _allowed([encoded], model.config.n_items)
    scores = scores.masked_fill(~allowed, float("-inf"))[0]
    order = torch.argsort(scores, descending=True, stable=True)[:int(allowed.sum())]
    inclusion = {t: plackett_luce.inclusion_probabilities(scores, k, t, n_samples, seed)[order]
                 .numpy() for t in temperatures}
    rank = None
    if target is not None and target in vocab:
        hits = (order == vocab.index(target) - 1).nonzero()
        rank = int(hits[0, 0]) + 1 if len(hits) else None
    return inclusion, rank

def collect_feedback(model: SequentialRecommender, vocab: ItemVocab,
                     conversations: list[Conversation], reranker: object, config: LoopConfig,
                     round_: int = 0, progress: bool = False) -> list[Feedback]:
    """Steps 1–4 for every conversation (targets outside the vocabulary are skipped)."""
    generator = torch.Generator().manual_seed(config.seed * 1_000 + round_)
    cases = [(c, vocab.encode(list(c.history))) for c in conversations
             if c.targets and c.targets[0] in vocab]
    if not cases:
        return []
    histories = [h for _, h in cases]
    scores = score_histories(model, histories)  # eval mode, no gradients, batched
    samples = plackett_luce.sample(scores, config.k, config.sets,
                                   _allowed(histories, model.config.n_items),
                                   config.temperature, generator)
    out = []
    for row, (conversation, history) in enumerate(tqdm(cases, desc=f"round {round_ + 1} feedback",
                                                       disable=not progress)):
        target = conversation.targets[0]
        sets = [[vocab.item(int(col) + 1) for col in order] for order in samples[row]]
        inserted = False
        if config.missing == "insert" and all(target not in s for s in sets):
            sets[0][-1] = target
            inserted = True
        rankings = rank_sets(reranker, conversation, sets)
        rewards = [dpo.set_reward(r.items, target, config.reward_k) for r in rankings]
        out.append(Feedback(conversation, history, sets, [r.items for r in rankings], rewards,
                            dpo.preference_pairs(rewards), inserted,
                            [r.failure for r in rankings if r.failure]))
    return out


def _orders(vocab: ItemVocab, sets: list[list[int]]) -> torch.Tensor:
    return torch.tensor([[vocab.index(i) - 1 for i in s] for s in sets])


def set_log_probs(model: SequentialRecommender, vocab: ItemVocab, histories: list[list[int]],
                  sets: list[list[int]], temperature: float) -> torch.Tensor:
    """log π(S) of each ordered set (corpus ids) after its history, differentiable."""
    allowed = _allowed(histories, model.config.n_items)
    return plackett_luce.log_prob(_scores(model, histories), _orders(vocab, sets), allowed,
                                  temperature)


def update(model: SequentialRecommender, reference: SequentialRecommender, vocab: ItemVocab,
           feedback: list[Feedback], optimizer: torch.optim.Optimizer, config: LoopConfig,
           round_: int = 0) -> dict[str, float]:
    """Step 5: DPO (+ optional SFT) steps over the round's pairs; returns mean loss and the
    fraction of pairs whose policy margin was positive before the update."""
    pairs = [(f, c, r) for f in feedback for c, r in f.pairs]
    if not pairs:
        return {"loss": float("nan"), "steps": 0}
    generator = torch.Generator().manual_seed(config.seed * 1_000 + round_ + 500)
    losses, steps = [], 0
    model.eval()  # no dropout: log-probabilities are deterministic
    for _ in range(config.epochs):
        order = torch.randperm(len(pairs), generator=generator).tolist()
        for start in range(0, len(order), config.batch_size):
            batch = [pairs[i] for i in order[start:start + config.batch_size]]
            histories = [f.history for f, _, _ in batch]
            allowed = _allowed(histories, model.config.n_items)
            chosen = _orders(vocab, [f.sets[c] for f, c, _ in batch])
            rejected = _orders(vocab, [f.sets[r] for f, _, r in batch])
            with torch.no_grad():  # one scoring pass per model serves both sides of the pairs
                reference_scores = _scores(reference, histories)
            scores = _scores(model, histories)
            log_probs = [plackett_luce.log_prob(s, orders, allowed, config.temperature)
                         for s in (scores, reference_scores) for orders in (chosen, rejected)]
            loss = dpo.dpo_loss(*log_probs, beta=config.beta).mean()
            if config.sft_weight > 0:
                targets = torch.tensor([vocab.index(f.conversation.targets[0]) - 1
                                        for f, _, _ in batch])
                loss = loss + config.sft_weight * F.cross_entropy(scores, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
    return {"loss": float(np.mean(losses)), "steps": steps}


def log_ratio(model: SequentialRecommender, reference: SequentialRecommender, vocab: ItemVocab,
              feedback: list[Feedback], temperature: float) -> float:
    """Mean log π(S) − log π_ref(S) over the round's sampled sets: a Monte-Carlo estimate of
    KL(π ‖ π_ref) over ordered sets (the sets were drawn from π)."""
    if not feedback:
        return float("nan")
    histories = [f.history for f in feedback for _ in f.sets]
    sets = [s for f in feedback for s in f.sets]
    with torch.no_grad():
        return float((set_log_probs(model, vocab, histories, sets, temperature)
                      - set_log_probs(reference, vocab, histories, sets, temperature)).mean())


@dataclass
class LoopResult:
    model: SequentialRecommender
    history: pd.DataFrame  # one row per round
    seconds: float


def _save_round(directory: Path, round_: int, model: SequentialRecommender,
                optimizer: torch.optim.Optimizer, record: dict, history: list[dict]) -> None:
    """Checkpoint a finished round (`cache.save_training`: safetensors + JSON, no pickle)."""
    cache.save_training(directory / f"round-{round_:02d}", record, optimizer,
                        {f"model.{k}": v for k, v in model.state_dict().items()},
                        history=history)


def _load_round(directory: Path, round_: int, record: dict, model: SequentialRecommender,
                optimizer: torch.optim.Optimizer) -> list[dict] | None:
    """The history of a saved round made with the same `record`, its state loaded into `model`
    and `optimizer`; None when it is missing, unusable (then warned) or from another run."""
    resumed = cache.resume_training(directory / f"round-{round_:02d}", record, optimizer)
    if resumed is None:
        return None
    tensors, saved = resumed
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return saved["history"]


def _state_fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_loop(model: SequentialRecommender, vocab: ItemVocab, conversations: list[Conversation],
             reranker: object, config: LoopConfig, directory: Path,
             validate: Callable[[SequentialRecommender], dict[str, float]] | None = None,
             progress: bool = True) -> LoopResult:
    """Run (or resume, or load) the loop from `model` (left untouched: a copy is trained).

    `validate(model) -> metrics` is called after every round (e.g. the retriever's leave-one-out
    validation NDCG); its values join the per-round history with the mean reward, the number of
    pairs, the share of conversations with a target in some set, the DPO loss and the log-ratio
    to π_ref.
    """
    directory = Path(directory)
    record = {"config": asdict(config),
              "reranker": getattr(reranker, "name", type(reranker).__name__),
              "model": getattr(getattr(reranker, "backend", None), "model", None),
              "conversations": cache.fingerprint([c.conversation_id for c in conversations]),
              "start": _state_fingerprint(model)}
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = copy.deepcopy(model)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    history: list[dict] = []
    seconds = 0.0
    for round_ in range(config.rounds, 0, -1):  # resume from the newest usable round
        saved = _load_round(directory, round_, record, policy, optimizer)
        if saved is not None:
            history, seconds = saved, saved[-1]["seconds"]
            break
    for round_ in range(len(history), config.rounds):
        started = time.perf_counter()
        feedback = collect_feedback(policy, vocab, conversations, reranker, config, round_,
                                    progress)
        row = {"round": round_ + 1,
               "reward": float(np.mean([np.mean(f.rewards) for f in feedback])) if feedback
               else float("nan"),
               "hit": float(np.mean([any(f.conversation.targets[0] in s for s in f.sets)
                                     and not f.inserted for f in feedback])) if feedback
               else float("nan"),
               "pairs": sum(len(f.pairs) for f in feedback),
               "log_ratio": log_ratio(policy, reference, vocab, feedback, config.temperature)}
        row.update(update(policy, reference, vocab, feedback, optimizer, config, round_))
        if validate is not None:
            row.update({f"valid {k}": v for k, v in validate(policy).items()})
        seconds += time.perf_counter() - started
        row["seconds"] = seconds
        history.append(row)
        _save_round(directory, round_ + 1, policy, optimizer, record, history)
    return LoopResult(policy.eval(), pd.DataFrame(history), seconds)
