"""Matrix factorisation for retrieval: user and item embeddings scored by inner product."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MatrixFactorization(nn.Module):
    """score(u, i) = <p_u, q_i> + b_i. The item bias is folded into the exported item
    embeddings as an extra dimension (user side 1), so retrieval is a pure inner product."""

    def __init__(self, n_users: int, n_items: int, dim: int = 32) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, user_index: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
        return (self.users(user_index) * self.items(item_index)).sum(-1) + self.item_bias(
            item_index
        ).squeeze(-1)

    def export_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user [n_users, dim+1], item [n_items, dim+1]) with <u, i> == forward(u, i)."""
        with torch.no_grad():
            ones = torch.ones(self.users.num_embeddings, 1)
            users = torch.cat([self.users.weight, ones], dim=1)
            items = torch.cat([self.items.weight, self.item_bias.weight], dim=1)
        return users.contiguous(), items.contiguous()


class EmbeddingScorer(nn.Module):
    """Fixed user and item tables scored by inner product: the exported form of every
    retrieval model (MF factors, or EASE's history rows and item-item columns)."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("users", torch.from_numpy(np.ascontiguousarray(users, np.float32)))
        self.register_buffer("items", torch.from_numpy(np.ascontiguousarray(items, np.float32)))

    def forward(self, user_index: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
        # F.embedding exports as a plain Gather (tensor indexing becomes GatherND).
        users = nn.functional.embedding(user_index, self.users)
        return (users * nn.functional.embedding(item_index, self.items)).sum(-1)
