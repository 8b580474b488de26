"""Sequential recommenders for the retriever: LRURec (Yue et al., WSDM 2024) and SASRec (Kang &
McAuley, 2018), sharing item embeddings, scoring and configuration.

Sequences are item *indices* 1..N (0 is padding) produced by `ItemVocab`, right-padded: real
items first, padding after, so a causal model never lets a real position see padding. Both models
map a sequence to one hidden vector per position; the score of item i after position t is
`h_t · e_i + b_i` with the item embeddings tied to the input embeddings.

LRURec's linear recurrent unit is a complex diagonal recurrence h_t = λ ⊙ h_{t-1} + γ ⊙ B x_t
with eigenvalues λ initialised on a ring (modulus in [r_min, r_max], phases in [0, 2π)),
input normalisation γ = sqrt(1 - abs(λ)²), and output Re(C h_t) (a real linear map of [Re h, Im h]).
Training computes it with a log-depth parallel scan (`parallel_scan`); `sequential_scan` is the
step-by-step reference a test compares it with.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from rar_lite import cache

MODELS = ("lrurec", "sasrec")
#: Bumped whenever a change to this module changes what a trained model computes, so that cached
#: checkpoints of older code are not reused (v2: SASRec position embeddings at std 0.02).
ARCHITECTURE_VERSION = 2


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a sequential recommender (saved next to every checkpoint)."""

    model: str = "lrurec"
    n_items: int = 0  # vocabulary size, padding excluded
    dim: int = 64
    layers: int = 2
    heads: int = 2  # SASRec only
    dropout: float = 0.2
    max_len: int = 200
    r_min: float = 0.8  # LRURec only: eigenvalue ring
    r_max: float = 0.99

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.n_items < 1:
            raise ValueError("n_items must be positive")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls(**json.loads(text))


class ItemVocab:
    """Corpus item ids <-> model indices 1..N (0 is padding)."""

    def __init__(self, item_ids: np.ndarray | list[int]) -> None:
        ids = np.asarray(sorted({int(i) for i in item_ids}), dtype="int64")
        if ids.size == 0:
            raise ValueError("an item vocabulary needs at least one item")
        self.item_ids = ids
        self._index = {int(item): k + 1 for k, item in enumerate(ids)}

    def __len__(self) -> int:
        return int(self.item_ids.size)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def index(self, item_id: int) -> int:
        return self._index[int(item_id)]

    def encode(self, items: list[int]) -> list[int]:
        """Indices of the known items of `items` (unknown ids are dropped)."""
        return [self._index[int(i)] for i in items if int(i) in self._index]

    def item(self, index: int) -> int:
        return int(self.item_ids[index - 1])

    def fingerprint(self) -> str:
        """Identifies the vocabulary: a checkpoint only loads onto the same one."""
        return cache.fingerprint(self.item_ids.tolist())


def pad_right(sequences: list[list[int]], max_len: int) -> torch.Tensor:
    """(B, L) index tensor: each sequence's last `max_len` items, then zeros."""
    length = max(1, min(max_len, max((len(s) for s in sequences), default=1)))
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tail = seq[-max_len:]
        if tail:
            out[row, : len(tail)] = torch.as_tensor(tail, dtype=torch.long)
    return out


def sequential_scan(u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Reference recurrence h_t = lam * h_{t-1} + u_t (h_{-1} = 0), one step at a time.

    `u`: (B, L, H) complex; `lam`: (H,) complex.
    """
    h = torch.zeros_like(u[:, 0])
    out = []
    for t in range(u.size(1)):
        h = lam * h + u[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def parallel_scan(u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The same recurrence in ceil(log2 L) steps (Hillis-Steele scan).

    After the step with offset d, h_t holds sum_{j < 2d} lam^j u_{t-j}; doubling d each step
    covers the whole prefix.
    """
    h, power, offset = u, lam, 1
    while offset < u.size(1):
        shifted = nn.functional.pad(h[:, :-offset], (0, 0, offset, 0))  # zeros in front
        h = h + power * shifted
        power = power * power
        offset *= 2
    return h


class LRULayer(nn.Module):
    """Linear recurrent unit with residual connection and LayerNorm."""

    def __init__(self, dim: int, dropout: float, r_min: float, r_max: float,
                 hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * dim
        u1, u2 = torch.rand(hidden), torch.rand(hidden)
        nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = torch.log(u2 * 2 * math.pi)
        modulus = torch.exp(-torch.exp(nu_log))
        gamma_log = torch.log(torch.sqrt(1 - modulus**2))
        self.params_log = nn.Parameter(torch.stack([nu_log, theta_log, gamma_log]))
        self.in_proj = nn.Linear(dim, 2 * hidden)  # real and imaginary parts of B x
        self.out_proj = nn.Linear(2 * hidden, dim)  # Re(C h) is linear in [Re h, Im h]
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def eigenvalues(self) -> torch.Tensor:
        nu, theta, _ = torch.exp(self.params_log)
        return torch.polar(torch.exp(-nu), theta)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, parallel: bool = True) -> torch.Tensor:
        gamma = torch.exp(self.params_log[2])
        real, imag = self.in_proj(x).chunk(2, dim=-1)
        u = torch.complex(real, imag) * (gamma * mask.unsqueeze(-1))
        h = (parallel_scan if parallel else sequential_scan)(u, self.eigenvalues())
        y = self.out_proj(torch.cat([h.real, h.imag], dim=-1))
        return self.norm(x + self.dropout(y))


class FeedForward(nn.Module):
    """Position-wise feed-forward layer with residual connection and LayerNorm."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.net(x))


class SequentialRecommender(nn.Module):
    """Shared parts: tied item embeddings with LayerNorm/dropout, item bias, scoring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.n_items + 1, config.dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=0.02)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.embedding_norm = nn.LayerNorm(config.dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.item_bias = nn.Parameter(torch.zeros(config.n_items + 1))

    def embed(self, seq: torch.Tensor) -> torch.Tensor:
        return self.embedding_dropout(self.embedding_norm(self.item_embedding(seq)))

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, L) indices -> (B, L, dim) hidden states."""
        raise NotImplementedError

    def item_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, dim) embeddings and (N,) biases of items 1..N (padding excluded)."""
        return self.item_embedding.weight[1:], self.item_bias[1:]

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores (..., N) of every item for hidden states (..., dim); column j is item index
        j + 1."""
        vectors, bias = self.item_vectors()
        return hidden @ vectors.T + bias

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state after the last real item of each right-padded sequence: (B, dim)."""
        hidden = self.encode(seq)
        last = (seq > 0).sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(seq.size(0)), last]


class LRURec(SequentialRecommender):
    """Item embedding -> stacked [LRU layer, feed-forward] blocks -> tied scoring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.lru = nn.ModuleList(LRULayer(config.dim, config.dropout, config.r_min, config.r_max)
                                 for _ in range(config.layers))
        self.ffn = nn.ModuleList(FeedForward(config.dim, config.dropout)
                                 for _ in range(config.layers))

    def encode(self, seq: torch.Tensor, parallel: bool = True) -> torch.Tensor:
        mask = (seq > 0).to(torch.float32)
        x = self.embed(seq)
        for lru, ffn in zip(self.lru, self.ffn):
            x = ffn(lru(x, mask, parallel=parallel))
        return x


class SASRec(SequentialRecommender):
    """Item + learned position embeddings -> causal self-attention blocks -> tied scoring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        # same scale as the item embeddings: at the default N(0, 1) positions drown the items
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 4 * config.dim,
                                           config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.dim)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        length = seq.size(1)
        positions = torch.arange(length, device=seq.device)
        x = self.embedding_dropout(self.embedding_norm(self.item_embedding(seq)
                                                       + self.position_embedding(positions)))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
        x = self.blocks(x, mask=causal, src_key_padding_mask=seq == 0)
        return self.final_norm(x)


def build_model(config: ModelConfig) -> SequentialRecommender:
    """The model a config names."""
    return {"lrurec": LRURec, "sasrec": SASRec}[config.model](config)
