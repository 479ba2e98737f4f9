"""Serving forms of trained CTR models: the same function in fewer, cheaper ONNX ops.

The training modules are written for gradients (a stable log-space product in the position
tower, separate tables for the linear and the pairwise terms). At serving time the weights are
fixed, so the exported graph can fold them:

- FM: every bucket's row becomes ``[v, w, |v|^2]``, so one gather and one sum over the fields
  give the pairwise sum, the linear term and the squared norms together; numeric fields add
  ``[num, num^2] @ W``; the logit is one matmul over ``[T*T, T]``. Platt's ``a, b`` fold into
  that matmul when nothing sits between the model and its calibration.
- Position tower: ``p = sigmoid(seen) * sigmoid(relevant)`` directly, its logit taken once
  (clamped: the calibrated output's derivative vanishes where the clamp acts).

:func:`serving_form` builds it from a trained :class:`CalibratedCTR`; the trainer exports the
serving form and checks its parity against the training module, so a wrong fold fails the
export instead of shipping.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.ctr import (
    CalibratedCTR,
    FactorizationMachine,
    PlattScaling,
    PositionBias,
)

# p's clamp before its logit: above the smallest normal float32, below the largest float32 < 1.
_P_MIN, _P_MAX = 1e-30, 1.0 - 2.0**-24


class FoldedFM(nn.Module):
    """FM's logit (times ``scale``, plus ``shift``) from one gather and two small matmuls.

    ``T = [S, lin, Q]`` (the fields' embedding sum, the linear term, the sum of squared norms)
    is ``[gathered rows flattened, num, num^2] @ W``, where W stacks one identity block per
    field over the numeric fields' contributions; then ``logit = [T*T, T] @ head + bias``.
    Both are Gemms: onnxruntime's ReduceSum over the field axis and its matrix-vector MatMul
    cost several times more at a few hundred rows.

    With a position tower, ``cat`` keeps the position field: its block in W is zero but for a
    fourth column of the table, the tower's examination weight, which lands in ``T``'s last
    column; so one gather serves both towers and no column selection is needed."""

    def __init__(
        self,
        fm: FactorizationMachine,
        scale: float = 1.0,
        shift: float = 0.0,
        tower: PositionBias | None = None,
    ) -> None:
        super().__init__()
        with torch.no_grad():
            v = fm.embed.table.weight.detach().float()
            dim = v.shape[1]
            columns = [v, fm.linear.weights.weight.detach().float(), v.pow(2).sum(1, keepdim=True)]
            if tower is not None:
                columns.append(tower.examination.weight.detach().float())
            table = torch.cat(columns, dim=1)  # [n, width]
            width = table.shape[1]
            numeric = fm.embed.numeric.detach().float()  # [N, d]
            n_numeric = numeric.shape[0]
            # [num, num^2] @ w_num adds the numeric fields' [v, w, |v|^2] contributions.
            w_num = torch.zeros(2 * n_numeric, width)
            if n_numeric:
                w_num[:n_numeric, :dim] = numeric
                if fm.linear.numeric is not None:
                    w_num[:n_numeric, dim] = fm.linear.numeric.weight.detach().float()[0]
                w_num[n_numeric:, dim + 1] = numeric.pow(2).sum(1)
            relevance_block = torch.eye(width)
            relevance_block[width - 1, width - 1] = 0.0 if tower is not None else 1.0
            blocks = [relevance_block] * fm.n_fields
            if tower is not None:
                position_block = torch.zeros(width, width)
                position_block[width - 1, width - 1] = 1.0
                blocks.insert(tower.position_field, position_block)
            # logit = 0.5 * |S|^2 + lin - 0.5 * Q + bias.
            head = torch.zeros(1, 2 * width)
            head[0, :dim] = 0.5
            head[0, width + dim] = 1.0
            head[0, width + dim + 1] = -0.5
            bias = fm.linear.bias.detach().float().reshape(1)
            if fm.linear.numeric is not None:
                bias = bias + fm.linear.numeric.bias.detach().float().reshape(1)
        self.register_buffer("table", table)
        self.register_buffer("weights", torch.cat([*blocks, w_num], dim=0))
        self.register_buffer("head", head * scale)
        self.register_buffer("bias", bias * scale + shift)
        self.n_numeric = n_numeric

    def field_sums(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """T = [S, lin, Q(, seen)] per row."""
        x = nn.functional.embedding(cat, self.table).flatten(1)
        if self.n_numeric:
            x = torch.cat([x, num, num * num], dim=1)
        return x @ self.weights

    def logit(self, t: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(torch.cat([t * t, t], dim=1), self.head, self.bias).reshape(-1)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return self.logit(self.field_sums(cat, num))


class ProductProbability(nn.Module):
    """The position tower's pCTR before calibration: sigmoid(seen) * sigmoid(relevant)."""

    def __init__(self, tower: PositionBias) -> None:
        super().__init__()
        self.relevance = tower.model
        self.position_field = tower.position_field
        self.register_buffer("keep", tower.keep.clone())
        self.register_buffer("seen", tower.examination.weight.detach().float().reshape(-1))

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        seen = self.seen.index_select(0, cat[:, self.position_field])
        relevant = self.relevance(cat.index_select(1, self.keep), num)
        return torch.sigmoid(seen) * torch.sigmoid(relevant)


class FoldedProductProbability(nn.Module):
    """:class:`ProductProbability` over an FM: both towers from one :class:`FoldedFM`."""

    def __init__(self, tower: PositionBias) -> None:
        super().__init__()
        self.fm = FoldedFM(tower.model, tower=tower)

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        t = self.fm.field_sums(cat, num)
        return torch.sigmoid(t[:, -1]) * torch.sigmoid(self.fm.logit(t))


class _CalibratedProduct(nn.Module):
    """Calibration applied to the logit of a probability."""

    def __init__(self, probability: nn.Module, calibration: nn.Module) -> None:
        super().__init__()
        self.probability = probability
        self.calibration = calibration

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        p = self.probability(cat, num).clamp(_P_MIN, _P_MAX)
        return self.calibration(torch.log(p) - torch.log(1.0 - p))


class _SigmoidOfLogit(nn.Module):
    def __init__(self, logit: nn.Module) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(cat, num))


def _relevance_form(model: nn.Module) -> nn.Module:
    return FoldedFM(model) if isinstance(model, FactorizationMachine) else model


def serving_form(model: CalibratedCTR) -> nn.Module:
    """The module to export for ``model``: same (cat, num) -> pCTR, folded weights."""
    inner, calibration = model.model, model.calibration
    if isinstance(inner, PositionBias):
        probability = (
            FoldedProductProbability(inner)
            if isinstance(inner.model, FactorizationMachine)
            else ProductProbability(inner)
        )
        return _CalibratedProduct(probability, calibration).eval()
    if isinstance(inner, FactorizationMachine) and isinstance(calibration, PlattScaling):
        a, b = (float(x) for x in calibration.platt.tolist())
        return _SigmoidOfLogit(FoldedFM(inner, scale=a, shift=b)).eval()
    return CalibratedCTR(_relevance_form(inner), calibration).eval()
