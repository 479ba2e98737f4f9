"""CTR models over hashed categorical fields and standardised numeric fields.

Every model maps ``cat`` int64 [batch, n_fields] and ``num`` float32 [batch, n_numeric] to a
logit [batch]; :class:`CalibratedCTR` wraps one with its calibration (Platt or isotonic) and
outputs the pCTR that is exported to ONNX, so the engine gets calibrated probabilities from
the graph alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class CTRSize:
    """Model size. The serving benchmark's "largest shipped" config is ``dim=16,
    mlp=(400, 400)`` over Criteo's 26 categorical + 13 numeric fields."""

    dim: int = 8
    mlp: tuple[int, ...] = (64, 32)
    cross_layers: int = 2
    dropout: float = 0.0


class LogisticRegression(nn.Module):
    """Hashed-feature logistic regression: one weight per bucket plus a linear numeric part."""

    def __init__(
        self, n_buckets: int, n_fields: int, n_numeric: int, size: CTRSize | None = None
    ) -> None:
        super().__init__()
        self.weights = nn.Embedding(n_buckets, 1, sparse=True)
        nn.init.zeros_(self.weights.weight)
        self.numeric = nn.Linear(n_numeric, 1) if n_numeric else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        logit = self.weights(cat).sum(dim=(1, 2)) + self.bias
        if self.numeric is not None:
            logit = logit + self.numeric(num).squeeze(-1)
        return logit


class FieldEmbeddings(nn.Module):
    """One ``dim``-vector per field: categorical buckets look theirs up in a shared hashed
    table; each numeric field has its own vector scaled by the field's value."""

    def __init__(self, n_buckets: int, n_numeric: int, dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(n_buckets, dim, sparse=True)
        nn.init.normal_(self.table.weight, std=0.01)
        self.numeric = nn.Parameter(torch.randn(n_numeric, dim) * 0.01)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """[batch, n_fields + n_numeric, dim]"""
        e = self.table(cat)
        if self.numeric.shape[0]:
            e = torch.cat([e, num.unsqueeze(-1) * self.numeric], dim=1)
        return e


def _mlp(width_in: int, widths: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width_in = width
    return nn.Sequential(*layers), width_in


def _pairwise(e: torch.Tensor) -> torch.Tensor:
    """FM's sum over field pairs of <e_i, e_j>, in O(fields * dim)."""
    return 0.5 * (e.sum(dim=1).pow(2) - e.pow(2).sum(dim=1)).sum(dim=1)


class FactorizationMachine(nn.Module):
    """Rendle's FM: the linear terms plus pairwise interactions of field embeddings."""

    def __init__(
        self, n_buckets: int, n_fields: int, n_numeric: int, size: CTRSize | None = None
    ) -> None:
        super().__init__()
        size = size or CTRSize()
        self.n_fields = n_fields
        self.linear = LogisticRegression(n_buckets, n_fields, n_numeric)
        self.embed = FieldEmbeddings(n_buckets, n_numeric, size.dim)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.linear(cat, num) + _pairwise(self.embed(cat, num))


class DeepFM(nn.Module):
    """DeepFM (Guo et al. 2017): FM and an MLP over the concatenated field embeddings, sharing
    the embeddings, their logits summed."""

    def __init__(
        self, n_buckets: int, n_fields: int, n_numeric: int, size: CTRSize | None = None
    ) -> None:
        super().__init__()
        size = size or CTRSize()
        self.linear = LogisticRegression(n_buckets, n_fields, n_numeric)
        self.embed = FieldEmbeddings(n_buckets, n_numeric, size.dim)
        self.deep, width = _mlp((n_fields + n_numeric) * size.dim, size.mlp, size.dropout)
        self.head = nn.Linear(width, 1)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        e = self.embed(cat, num)
        deep = self.head(self.deep(e.flatten(1))).squeeze(-1)
        return self.linear(cat, num) + _pairwise(e) + deep


class CrossNetworkV2(nn.Module):
    """DCN-v2 (Wang et al. 2021), parallel form: a cross network ``x_{l+1} = x0 * (W x_l + b)
    + x_l`` (full-rank W) beside an MLP, both over [field embeddings, raw numeric values]."""

    def __init__(
        self, n_buckets: int, n_fields: int, n_numeric: int, size: CTRSize | None = None
    ) -> None:
        super().__init__()
        size = size or CTRSize()
        self.embed = nn.Embedding(n_buckets, size.dim, sparse=True)
        nn.init.normal_(self.embed.weight, std=0.01)
        width = n_fields * size.dim + n_numeric
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(size.cross_layers))
        for layer in self.cross:
            # Start near the identity map so that deep stacks train stably.
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.deep, deep_width = _mlp(width, size.mlp, size.dropout)
        self.head = nn.Linear(width + deep_width, 1)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([self.embed(cat).flatten(1), num], dim=1)
        x = x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        return self.head(torch.cat([x, self.deep(x0)], dim=1)).squeeze(-1)


class PositionBias(nn.Module):
    """Position-bias aware learning (PAL, Guo et al. 2019): pCTR = P(seen | position) x
    P(click | seen). A one-weight-per-bucket tower gives the examination probability from the
    position field alone; the wrapped model, which never sees the position, gives the
    relevance. A logit-additive model cannot express a product of probabilities: with the
    position among its inputs it over-predicts high-relevance rows in low slots and
    under-predicts them in the first. Returns the logit of the product, so losses and
    calibration work unchanged; the wrapped model is built for ``n_fields - 1`` fields."""

    def __init__(
        self, model: nn.Module, n_buckets: int, n_fields: int, position_field: int
    ) -> None:
        super().__init__()
        if not 0 <= position_field < n_fields:
            raise ValueError(f"position field {position_field} outside 0..{n_fields - 1}")
        self.model = model
        self.position_field = position_field
        keep = [j for j in range(n_fields) if j != position_field]
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.int64))
        self.examination = nn.Embedding(n_buckets, 1, sparse=True)
        nn.init.zeros_(self.examination.weight)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        seen = self.examination(cat[:, self.position_field]).squeeze(-1)
        relevant = self.model(cat.index_select(1, self.keep), num)
        # log p and log(1 - p) of p = sigmoid(seen) * sigmoid(relevant), without cancellation:
        # 1 - p = sigmoid(-seen) + sigmoid(seen) * sigmoid(-relevant).
        log_p = nn.functional.logsigmoid(seen) + nn.functional.logsigmoid(relevant)
        log_not_p = torch.logaddexp(
            nn.functional.logsigmoid(-seen),
            nn.functional.logsigmoid(seen) + nn.functional.logsigmoid(-relevant),
        )
        return log_p - log_not_p


class PlattScaling(nn.Module):
    """pCTR = sigmoid(a * logit + b)."""

    def __init__(self, a: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("platt", torch.tensor([a, b], dtype=torch.float32))

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.platt[0] * logit + self.platt[1])

    def to_json(self) -> dict[str, object]:
        a, b = self.platt.tolist()
        return {"method": "platt", "a": a, "b": b}


class IsotonicCalibration(nn.Module):
    """Isotonic regression of the label on the logit, as the piecewise-linear interpolation
    through its knots (what scikit-learn's ``IsotonicRegression.predict`` computes, clipped at
    both ends). Written as a sum of clamped ramps so the exported graph needs only Clip, Mul
    and ReduceSum, no search op."""

    def __init__(self, x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> None:
        super().__init__()
        x = np.asarray(x, dtype=np.float64)
        y = np.clip(np.asarray(y, dtype=np.float64), eps, 1.0 - eps)
        if x.size < 2:
            # One knot: a constant; a second knot a unit away keeps the formula uniform.
            x, y = np.array([x[0], x[0] + 1.0]), np.array([y[0], y[0]])
        slope = np.diff(y) / np.maximum(np.diff(x), 1e-12)
        self.knots_x = x.tolist()
        self.knots_y = y.tolist()
        self.register_buffer("lo", torch.tensor(x[:-1], dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(x[1:], dtype=torch.float32))
        self.register_buffer("slope", torch.tensor(slope, dtype=torch.float32))
        self.register_buffer("y0", torch.tensor(y[0], dtype=torch.float32))

    def forward(self, logit: torch.Tensor) -> torch.Tensor:
        x = logit.unsqueeze(-1)
        ramps = torch.minimum(torch.maximum(x, self.lo), self.hi) - self.lo
        return self.y0 + (ramps * self.slope).sum(dim=-1)

    def to_json(self) -> dict[str, object]:
        return {"method": "isotonic", "knots_logit": self.knots_x, "knots_pctr": self.knots_y}


class CalibratedCTR(nn.Module):
    """A CTR model followed by its calibration: the exported graph outputs calibrated pCTR."""

    def __init__(self, model: nn.Module, calibration: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.calibration = calibration if calibration is not None else PlattScaling()

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.calibration(self.model(cat, num))


CTR_MODELS: dict[str, type[nn.Module]] = {
    "lr": LogisticRegression,
    "fm": FactorizationMachine,
    "deepfm": DeepFM,
    "dcn": CrossNetworkV2,
}
