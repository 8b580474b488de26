"""Ranking metrics shared by every chapter: NDCG, Recall and MRR at k.

Everything is computed from the 0-based **rank** of each ground-truth item (`inf` when the item
is missing from the ranked list). A conversation with several targets contributes one rank per
target, and metrics are means over these (conversation, target) pairs — the protocol of He et al.
(2023) for conversational recommendation, and the usual one for leave-one-out (one target).

For one target at rank r: Recall@k = 1[r < k]; NDCG@k = 1[r < k] / log2(r + 2) (a single
relevant item has ideal DCG 1); MRR@k = 1[r < k] / (r + 1).

Ties in scores count against the target (`rank_from_scores`): a constant scorer earns nothing.

torch is imported only by `rank_from_scores`: the list metrics (what `rar-lite score-generations`
uses) start without it, and a tensor of ranks is recognised without importing torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)


def rank_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target: the number of *other* items scoring at least as high.

    `scores`: (B, N) float; `targets`: (B,) column indices. Masked items should hold -inf; a
    target whose own score is -inf gets rank `inf` (it cannot be retrieved).
    """
    import torch

    target_scores = scores.gather(1, targets.view(-1, 1))
    ranks = (scores >= target_scores).sum(dim=1).to(torch.float64) - 1
    return torch.where(torch.isinf(target_scores.view(-1)) & (target_scores.view(-1) < 0),
                       torch.full_like(ranks, float("inf")), ranks)


def stable_ranks(scores: np.ndarray, targets: Sequence[Sequence[int]],
                 chunk: int = 256) -> np.ndarray:
    """0-based rank of each (row, target) pair of a (rows, items) score matrix, `targets[r]`
    being row r's target columns: its place in ``np.argsort(-row, kind="stable")`` (higher
    scores first, ties by column), found by counting rather than sorting the row — the items
    scoring higher, plus the tied ones in earlier columns. Pairs are taken `chunk` at a time."""
    counts = [len(wanted) for wanted in targets]
    rows = np.repeat(np.arange(len(targets)), counts)
    columns = np.fromiter((t for wanted in targets for t in wanted), dtype=np.int64,
                          count=sum(counts))
    ranks = np.empty(len(rows), dtype=np.int64)
    positions = np.arange(scores.shape[1])
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        block = scores[rows[part]]
        own = block[np.arange(len(block)), columns[part]][:, None]
        earlier = positions < columns[part][:, None]
        ranks[part] = (block > own).sum(1) + ((block == own) & earlier).sum(1)
    return ranks


def ranks_in_list(ranked: Sequence[int], targets: Iterable[int]) -> list[float]:
    """0-based position of each target in a ranked list of ids (`inf` when absent)."""
    position = {}
    for index, item in enumerate(ranked):
        position.setdefault(item, index)
    return [float(position.get(t, float("inf"))) for t in targets]


def _is_tensor(value: object) -> TypeGuard[torch.Tensor]:
    """Whether `value` is a torch tensor; torch is not imported (a tensor implies it already is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def per_pair_metrics(ranks: Iterable[float] | np.ndarray | torch.Tensor,
                     ks: Iterable[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """NDCG@k, Recall@k and MRR@k per (conversation, target) pair (for paired statistics)."""
    if _is_tensor(ranks):
        ranks = ranks.detach().cpu().numpy()
    values = np.asarray(ranks if isinstance(ranks, np.ndarray) else list(ranks), dtype="float64")
    if values.size == 0:
        raise ValueError("no ranks to score")
    if np.any(np.isnan(values)) or np.any(values < 0):
        raise ValueError("ranks must be non-negative (inf for a missing target)")
    out = {}
    for k in ks:
        hit = values < k
        safe = np.where(hit, values, 0.0)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(safe + 2), 0.0)
        out[f"recall@{k}"] = hit.astype("float64")
        out[f"mrr@{k}"] = np.where(hit, 1.0 / (safe + 1), 0.0)
    return out


def metrics_from_ranks(ranks: Iterable[float] | np.ndarray | torch.Tensor,
                       ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean NDCG@k, Recall@k and MRR@k over ranks (see the module docstring)."""
    return {name: float(values.mean()) for name, values in per_pair_metrics(ranks, ks).items()}
