"""Uplift meta-learners on PyTorch MLPs, each ending as one graph ``features -> uplift[n, T]``
(expected incremental conversion probability of each treatment against control).

- ``response``: P(convert | x, treated with t) minus the control's mean rate: the classic
  "likely buyers" model, kept as the baseline (it ranks sure things first).
- ``t_learner``: separate outcome models per arm; uplift = mu_t(x) - mu_0(x).
- ``x_learner`` (Künzel et al. 2019): imputed effects D1 = y - mu_0(x) on the treated and
  D0 = mu_t(x) - y on the controls, regressed separately and blended by the propensity.
- ``dr_learner`` (Kennedy 2020): the doubly robust pseudo-outcome, with outcome models
  cross-fitted on two folds, regressed on x. The propensity is the campaign's known
  randomisation share, not a model.

The training loop lives in :func:`fit_mlp`; modules only compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LEARNERS: tuple[str, ...] = ("response", "t_learner", "x_learner", "dr_learner")


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 25
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    seed: int = 0


class MLP(nn.Module):
    def __init__(self, width: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class Probability(nn.Module):
    """sigmoid of a logit model, minus an optional constant."""

    def __init__(self, model: nn.Module, minus: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.minus = minus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x)) - self.minus


class Difference(nn.Module):
    def __init__(self, treated: nn.Module, control: nn.Module) -> None:
        super().__init__()
        self.treated = treated
        self.control = control

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.treated(x)) - torch.sigmoid(self.control(x))


class Blend(nn.Module):
    """w * a(x) + (1 - w) * b(x)."""

    def __init__(self, a: nn.Module, b: nn.Module, w: float) -> None:
        super().__init__()
        self.a, self.b, self.w = a, b, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * self.a(x) + (1.0 - self.w) * self.b(x)


class UpliftGraph(nn.Module):
    """One head per treatment, stacked: [n, width] -> [n, T]."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(features) for h in self.heads], dim=1)


def fit_mlp(x: np.ndarray, target: np.ndarray, loss: str, config: MLPConfig) -> MLP:
    """An MLP fitted to ``target``: ``loss`` "logistic" (0/1 targets, logit output) or "mse"."""
    torch.manual_seed(config.seed)
    model = MLP(x.shape[1], config.hidden)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        nn.BCEWithLogitsLoss() if loss == "logistic" else nn.MSELoss()
    )
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ys = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(xs), generator=generator)
        for lo in range(0, len(xs), config.batch_size):
            batch = order[lo : lo + config.batch_size]
            optimiser.zero_grad()
            criterion(model(xs[batch]), ys[batch]).backward()
            optimiser.step()
    model.eval()
    return model


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def _prob(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-_predict(model, x).astype(np.float64)))


def fit_learner(
    name: str, x: np.ndarray, arm: np.ndarray, y: np.ndarray, treatments: int, config: MLPConfig
) -> UpliftGraph:
    """The named learner for every treatment 1..treatments against arm 0."""
    control = arm == 0
    m0 = fit_mlp(x[control], y[control], "logistic", config) if name != "response" else None
    base = float(y[control].mean())
    heads: list[nn.Module] = []
    for t in range(1, treatments + 1):
        treated = arm == t
        if name == "response":
            heads.append(Probability(fit_mlp(x[treated], y[treated], "logistic", config), base))
        elif name == "t_learner":
            assert m0 is not None
            heads.append(Difference(fit_mlp(x[treated], y[treated], "logistic", config), m0))
        elif name == "x_learner":
            assert m0 is not None
            mt = fit_mlp(x[treated], y[treated], "logistic", config)
            d1 = y[treated] - _prob(m0, x[treated])
            d0 = _prob(mt, x[control]) - y[control]
            tau1 = fit_mlp(x[treated], d1, "mse", config)
            tau0 = fit_mlp(x[control], d0, "mse", config)
            e = treated.sum() / (treated.sum() + control.sum())
            # Künzel's weighting: the effect fitted on the larger arm's imputations counts less
            # where that arm is the better-known one, g(x) = e.
            heads.append(Blend(tau0, tau1, float(e)))
        elif name == "dr_learner":
            heads.append(_dr_head(x, arm, y, t, config))
        else:
            raise ValueError(f"unknown learner {name!r}; known: {list(LEARNERS)}")
    return UpliftGraph(heads)


def _dr_head(x: np.ndarray, arm: np.ndarray, y: np.ndarray, t: int, config: MLPConfig) -> MLP:
    rows = np.flatnonzero((arm == 0) | (arm == t))
    rng = np.random.default_rng(config.seed + t)
    fold = rng.integers(0, 2, rows.size)
    w = (arm[rows] == t).astype(np.float64)
    e = w.mean()
    mu0, mu1 = np.zeros(rows.size), np.zeros(rows.size)
    for k in (0, 1):
        fit, out = rows[fold != k], fold == k
        c, tr = fit[arm[fit] == 0], fit[arm[fit] == t]
        mu0[out] = _prob(fit_mlp(x[c], y[c], "logistic", config), x[rows[out]])
        mu1[out] = _prob(fit_mlp(x[tr], y[tr], "logistic", config), x[rows[out]])
    yr = y[rows].astype(np.float64)
    phi = mu1 - mu0 + w * (yr - mu1) / e - (1 - w) * (yr - mu0) / (1 - e)
    return fit_mlp(x[rows], phi, "mse", config)


def predict_uplift(graph: UpliftGraph, x: np.ndarray) -> np.ndarray:
    """[n, T] float64 uplift estimates."""
    return _predict(graph, x).astype(np.float64)
