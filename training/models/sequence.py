"""A sequence-aware retrieval model in the SASRec style (Kang & McAuley 2018): causal
self-attention over the user's last ``max_len`` items; the state after the newest item is the
user vector, scored by inner product with the item embeddings (shared with the input side).

The user tower (:meth:`SASRec.forward`: item rows, left-padded with ``pad`` = ``n_items``, ->
user vector) is what the engine runs at request time on the user's recent items, so it is
written with plain matmuls and an additive mask (no ``-inf``: a row of padding only attends
uniformly to padding instead of turning into NaN, and every op exports to ONNX).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Additive mask for keys a query must not see: large enough to zero them after softmax, finite
# so that an all-padding row stays a number.
MASKED = -1e9


class CausalSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention + feed-forward block, each query seeing only itself,
    earlier positions and no padding."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, D]; ``bias`` [B, 1, L, L] additive mask."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.out(attended))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(nn.Module):
    """Next-item model over item rows ``[0, n_items)``; row ``n_items`` is padding."""

    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 50,
        heads: int = 2,
        layers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_items, self.max_len, self.pad, self.dim = n_items, max_len, n_items, dim
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.positions = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(CausalSelfAttention(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.items.weight, std=dim**-0.5)
        with torch.no_grad():
            self.items.weight[n_items].zero_()
        nn.init.normal_(self.positions.weight, std=0.02)
        self.register_buffer(
            "causal", torch.triu(torch.full((max_len, max_len), MASKED), diagonal=1)
        )

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] of left-padded item rows ``seq`` [B, L] (L <= max_len),
        the position embedding counted back from the newest item."""
        n = seq.shape[1]
        start = self.max_len - n
        x = self.items(seq) * math.sqrt(self.items.embedding_dim)
        x = self.drop(x + self.positions.weight[start:])
        bias = (
            self.causal[start:, start:][None, None]
            + torch.where(seq == self.pad, MASKED, 0.0)[:, None, None, :]
        )
        for block in self.blocks:
            x = block(x, bias)
        return self.norm(x)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """The user tower: the state after the newest of ``items`` [B, L], [B, D]."""
        return self.encode(items)[:, -1]

    def item_table(self) -> torch.Tensor:
        """[n_items, D]: score(user, item) = <forward(seq), item_table()[item]>."""
        return self.items.weight[: self.n_items]
