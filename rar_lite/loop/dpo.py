"""Rewards, preference pairs and the DPO loss of the feedback loop (chapter 5).

- `set_reward`: how well the LLM's ranking of one candidate set serves the held-out target:
  NDCG@k of the target's rank (1/log2(rank+1) within the top k, one target), 0 when the target is
  not in the set.
- `preference_pairs`: within one conversation, every set with a higher reward is *chosen* over
  every set with a lower one; equal rewards give no pair.
- `dpo_loss`: the sigmoid DPO loss (Rafailov et al. 2023) on sequence log-probabilities,
  -log σ(β [(log π(S_c) − log π_ref(S_c)) − (log π(S_r) − log π_ref(S_r))]) — the formula of TRL
  1.16's `DPOTrainer` with loss_type "sigmoid" and the default reverse-KL divergence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def set_reward(ranked: Sequence[int], target: int, k: int = 10) -> float:
    """NDCG@k of `target` in the ranked list (0 when absent or below k)."""
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    ranked = list(ranked)
    if target not in ranked:
        return 0.0
    rank = ranked.index(target) + 1
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def preference_pairs(rewards: Sequence[float]) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs of sets with strictly different rewards."""
    return [(i, j) for i, ri in enumerate(rewards) for j, rj in enumerate(rewards) if ri > rj]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """Per-pair sigmoid DPO loss from the four sequence log-probabilities."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin)
