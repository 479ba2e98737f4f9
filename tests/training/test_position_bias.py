"""The position tower: pCTR = examination(position) x relevance, the relevance model blind to
the position."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from training.fit import FitConfig, fit_ctr, predict_logits
from training.metrics import logloss
from training.models.ctr import LogisticRegression, PositionBias


class _Recorder(nn.Module):
    """A relevance model that returns a fixed logit and remembers what it was given."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit
        self.seen: torch.Tensor | None = None

    def forward(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        self.seen = cat
        return torch.full((len(cat),), self.logit)


def test_output_is_the_logit_of_the_product_and_relevance_never_sees_the_position() -> None:
    relevance = _Recorder(0.7)
    tower = PositionBias(relevance, n_buckets=10, n_fields=3, position_field=1)
    with torch.no_grad():
        tower.examination.weight[:, 0] = torch.arange(10, dtype=torch.float32) - 5.0
    cat = torch.tensor([[4, 2, 9], [4, 8, 9]])
    out = tower(cat, torch.zeros(2, 0))
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    for row, bucket in enumerate((2, 8)):
        p = sig(bucket - 5.0) * sig(0.7)
        assert out[row].item() == pytest.approx(math.log(p / (1 - p)), rel=1e-5)
    assert relevance.seen is not None and relevance.seen.tolist() == [[4, 9], [4, 9]]


def test_logit_stays_finite_when_both_factors_saturate() -> None:
    tower = PositionBias(_Recorder(40.0), n_buckets=2, n_fields=1, position_field=0)
    with torch.no_grad():
        tower.examination.weight.fill_(40.0)
    out = tower(torch.zeros((1, 1), dtype=torch.int64), torch.zeros(1, 0))
    assert torch.isfinite(out).all() and out.item() > 30


def test_bad_position_field_is_refused() -> None:
    with pytest.raises(ValueError, match="position field"):
        PositionBias(_Recorder(0.0), n_buckets=4, n_fields=2, position_field=2)


@pytest.mark.slow  # trains two models
def test_tower_fits_a_position_times_relevance_truth_better_than_an_additive_logit() -> None:
    # Truth as the simulator's: p = examination[pos] * sigmoid(relevance logit).
    rng = np.random.default_rng(0)
    n = 40_000
    x = rng.normal(0.0, 1.5, n)
    pos = rng.integers(0, 4, n)
    p = np.array([1.0, 0.6, 0.4, 0.3])[pos] / (1.0 + np.exp(-(2.0 * x - 0.5)))
    y = (rng.random(n) < p).astype(np.float32)
    # Field 0: the position (buckets 0-3); field 1: a coarse bucket of x (buckets 4-43).
    cat = np.stack([pos, 4 + np.clip(((x + 5) * 4).astype(int), 0, 39)], axis=1).astype(np.int64)
    num = np.zeros((n, 0), dtype=np.float32)
    tr, te = slice(0, 30_000), slice(30_000, None)
    config = FitConfig(epochs=4, lr=0.05, batch_size=512, progress=False)
    losses = {}
    for name in ("additive", "tower"):
        torch.manual_seed(0)
        if name == "additive":
            model: nn.Module = LogisticRegression(44, 2, 0)
        else:
            model = PositionBias(LogisticRegression(44, 1, 0), 44, 2, position_field=0)
        fit_ctr(model, cat[tr], num[tr], y[tr], config)
        logits = predict_logits(model, cat[te], num[te]).astype(np.float64)
        losses[name] = logloss(y[te], 1.0 / (1.0 + np.exp(-logits)))
    assert losses["tower"] < losses["additive"] - 0.002
