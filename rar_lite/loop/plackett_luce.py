"""The Plackett–Luce distribution over ordered sets, as the feedback loop (chapter 5) uses it.

A retriever's scores s over N items, with a temperature τ, define a distribution over ordered
sets S = (i_1, ..., i_K) drawn without replacement: pick i_1 with probability softmax(s/τ), remove
it, pick i_2 from the rest, and so on:

    log π(S) = Σ_k [ s_{i_k}/τ − log Σ_{j not in {i_1..i_{k−1}}, j allowed} e^{s_j/τ} ].

Sampling uses the Gumbel-top-K trick: the K largest of s/τ + Gumbel noise are an exact
Plackett–Luce sample, in order (Yellott 1977; Kool et al. 2019). Items can be excluded (the user's
history) with a boolean mask.
"""

from __future__ import annotations

import torch


def _logits(scores: torch.Tensor, allowed: torch.Tensor | None, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = scores / temperature
    if allowed is not None:
        if allowed.shape != scores.shape:
            raise ValueError(f"mask shape {tuple(allowed.shape)} != scores shape "
                             f"{tuple(scores.shape)}")
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits


def log_prob(scores: torch.Tensor, orders: torch.Tensor, allowed: torch.Tensor | None = None,
             temperature: float = 1.0) -> torch.Tensor:
    """log π(S) of ordered sets under Plackett–Luce: scores (B, N), orders (B, K) column
    indices -> (B,). Differentiable in `scores`. An order naming a disallowed or repeated item
    has log-probability -inf."""
    if orders.dim() != 2 or scores.dim() != 2 or orders.size(0) != scores.size(0):
        raise ValueError("scores must be (B, N) and orders (B, K) with the same B")
    logits = _logits(scores, allowed, temperature)
    total = torch.zeros(scores.size(0), dtype=logits.dtype, device=logits.device)
    for k in range(orders.size(1)):
        column = orders[:, k:k + 1]
        total = total + logits.gather(1, column).squeeze(1) - torch.logsumexp(logits, dim=1)
        logits = logits.scatter(1, column, float("-inf"))
    return total


def sample(scores: torch.Tensor, k: int, n_samples: int = 1, allowed: torch.Tensor | None = None,
           temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n_samples` Plackett–Luce ordered sets of size `k` per row: (B, n_samples, k) column
    indices, by the Gumbel-top-K trick."""
    logits = _logits(scores.detach(), allowed, temperature)
    available = int(torch.isfinite(logits).sum(dim=1).min()) if logits.numel() else 0
    if not 1 <= k <= available:
        raise ValueError(f"k must be in 1..{available} (allowed items per row), got {k}")
    expanded = logits.unsqueeze(1).expand(-1, n_samples, -1)
    uniform = torch.rand(expanded.shape, generator=generator, dtype=logits.dtype,
                         device=logits.device).clamp_(min=1e-20, max=1 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform))
    return (expanded + gumbel).topk(k, dim=-1).indices


def inclusion_probabilities(scores: torch.Tensor, k: int, temperature: float = 1.0,
                            n_samples: int = 2000, seed: int = 0) -> torch.Tensor:
    """How likely each item is to be in a Plackett–Luce set of size `k`: scores (N,) -> (N,),
    estimated from `n_samples` seeded Gumbel-top-K draws (the values sum to `k`). The picture
    of what the temperature does: low τ always draws the top, high τ spreads over the tail."""
    if scores.dim() != 1:
        raise ValueError(f"scores must be one row (N,), got shape {tuple(scores.shape)}")
    generator = torch.Generator(device=scores.device).manual_seed(seed)
    orders = sample(scores.unsqueeze(0), k, n_samples, temperature=temperature,
                    generator=generator)[0]
    counts = torch.zeros(scores.size(0), dtype=torch.float64, device=scores.device)
    counts.index_add_(0, orders.reshape(-1), torch.ones(orders.numel(), dtype=torch.float64,
                                                       device=scores.device))
    return counts / n_samples
