"""CTR models over hashed categorical fields and standardised numeric fields.

Every model maps ``cat`` int64 [batch, n_fields] and ``num`` float32 [batch, n_numeric] to a
logit [batch]; :class:`CalibratedCTR` wraps one with Platt scaling and outputs the pCTR that
is exported to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn


class LogisticRegression(nn.Module):
    """Hashed-feature logistic regression: one weight per bucket plus a linear numeric part."""

    def __init__(self, n_buckets: int, n_fields: int, n_numeric: int) -> None:
        super().__init__()
        self.weights = nn.Embedding(n_buckets, 1)
        nn.init.zeros_(self.weights.weight)
        self.numeric = nn.Linear(n_numeric, 1) if n_numeric else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        logit = self.weights(cat).sum(dim=(1, 2)) + self.bias
        if self.numeric is not None:
            logit = logit + self.numeric(num).squeeze(-1)
        return logit


class FactorizationMachine(nn.Module):
    """Rendle's FM: the linear terms plus pairwise interactions of field embeddings (numeric
    fields get an embedding scaled by their value)."""

    def __init__(self, n_buckets: int, n_fields: int, n_numeric: int, dim: int = 8) -> None:
        super().__init__()
        self.linear = LogisticRegression(n_buckets, n_fields, n_numeric)
        self.embeddings = nn.Embedding(n_buckets, dim)
        nn.init.normal_(self.embeddings.weight, std=0.01)
        self.numeric_embeddings = nn.Parameter(torch.randn(n_numeric, dim) * 0.01)

    def field_embeddings(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """[batch, n_fields + n_numeric, dim]"""
        e = self.embeddings(cat)
        if self.numeric_embeddings.shape[0]:
            e = torch.cat([e, num.unsqueeze(-1) * self.numeric_embeddings], dim=1)
        return e

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        e = self.field_embeddings(cat, num)
        pairwise = 0.5 * (e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)).sum(dim=1)
        return self.linear(cat, num) + pairwise


class CalibratedCTR(nn.Module):
    """A CTR model followed by Platt scaling: pCTR = sigmoid(a * logit + b)."""

    def __init__(self, model: nn.Module, a: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("platt", torch.tensor([a, b], dtype=torch.float32))

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.platt[0] * self.model(cat, num) + self.platt[1])


CTR_MODELS: dict[str, type[nn.Module]] = {
    "lr": LogisticRegression,
    "fm": FactorizationMachine,
}
