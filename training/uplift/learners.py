"""Uplift meta-learners on PyTorch MLPs, each ending as one graph ``features -> uplift[n, T]``
(expected incremental conversion probability of each treatment against control).

- ``response``: P(convert | x, treated with t) minus the control's mean rate: the classic
  "likely buyers" model, kept as the baseline (it ranks sure things first).
- ``t_learner``: separate outcome models per arm; uplift = mu_t(x) - mu_0(x).
- ``tarnet``: one outcome model with a shared trunk and a head per arm (Shalit et al. 2017);
  uplift = mu_t(x) - mu_0(x) from the heads. X and DR use it as their outcome model.
- ``x_learner`` (Künzel et al. 2019): imputed effects D1 = y - mu_0(x) on the treated and
  D0 = mu_t(x) - y on the controls, regressed separately and blended by the propensity.
- ``dr_learner`` (Kennedy 2020): the doubly robust pseudo-outcome, with outcome models
  cross-fitted on two folds, regressed on x. The propensity is the campaign's known
  randomisation share, not a model.

The training loop lives in :func:`fit_mlp`; modules only compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

LEARNERS: tuple[str, ...] = ("response", "t_learner", "tarnet", "x_learner", "dr_learner")
# Early stopping needs a holdout big enough to measure a loss on.
MIN_HOLDOUT_ROWS = 200


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 40
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    seed: int = 0
    # Early stopping: share of each model's rows held out, epochs without improvement (0: off).
    holdout: float = 0.15
    patience: int = 4


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


class Mean(nn.Module):
    """The average of several models' outputs (a bag of fits with different seeds)."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(features) for m in self.models]).mean(dim=0)


class UpliftGraph(nn.Module):
    """One head per treatment, stacked: [n, width] -> [n, T]."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(features) for h in self.heads], dim=1)


def _fit(
    model: nn.Module,
    n: int,
    batch_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    config: MLPConfig,
) -> None:
    """Mini-batch AdamW over ``n`` rows; with ``patience``, a seeded ``holdout`` share of the
    rows stops training once its loss has not improved for that many epochs, and the best
    epoch's weights are kept (small campaigns overfit within a few epochs)."""
    torch.manual_seed(config.seed)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    rows = torch.randperm(n, generator=generator)
    held = int(n * config.holdout) if config.patience and n >= MIN_HOLDOUT_ROWS else 0
    check, train = rows[:held], rows[held:]
    best, best_state, stale = float("inf"), None, 0
    for _ in range(config.epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=generator)]
        for lo in range(0, len(order), config.batch_size):
            optimiser.zero_grad()
            batch_loss(model, order[lo : lo + config.batch_size]).backward()
            optimiser.step()
        if not held:
            continue
        model.eval()
        with torch.no_grad():
            loss = float(batch_loss(model, check))
        if loss < best - 1e-6:
            best, stale = loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def fit_mlp(x: np.ndarray, target: np.ndarray, loss: str, config: MLPConfig) -> MLP:
    """An MLP fitted to ``target``: ``loss`` "logistic" (0/1 targets, logit output) or "mse"."""
    torch.manual_seed(config.seed)
    model = MLP(x.shape[1], config.hidden)
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        nn.BCEWithLogitsLoss() if loss == "logistic" else nn.MSELoss()
    )
    xs, ys = _tensor(x), _tensor(target)
    _fit(model, len(xs), lambda m, b: criterion(m(xs[b]), ys[b]), config)
    return model


class SharedOutcome(nn.Module):
    """Outcome logits of every arm from one shared trunk (TARNet, Shalit et al. 2017): the
    baseline behaviour all arms share is learnt from every row, each arm's head only what
    differs."""

    def __init__(self, width: int, hidden: tuple[int, ...], arms: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Linear(width, arms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


class ArmDifference(nn.Module):
    """uplift[n, T] = P(y | arm t) - P(y | control) from a :class:`SharedOutcome`."""

    def __init__(self, outcome: SharedOutcome) -> None:
        super().__init__()
        self.outcome = outcome

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.outcome(features))
        return p[:, 1:] - p[:, :1]


def fit_shared_outcome(
    x: np.ndarray, arm: np.ndarray, y: np.ndarray, arms: int, config: MLPConfig
) -> SharedOutcome:
    torch.manual_seed(config.seed)
    model = SharedOutcome(x.shape[1], config.hidden, arms)
    xs, ys = _tensor(x), _tensor(y)
    index = torch.from_numpy(np.array(arm, dtype=np.int64))[:, None]
    bce = nn.BCEWithLogitsLoss()
    _fit(
        model,
        len(xs),
        lambda m, b: bce(m(xs[b]).gather(1, index[b]).squeeze(1), ys[b]),
        config,
    )
    return model


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(_tensor(x)).numpy()


def _prob(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-_predict(model, x).astype(np.float64)))


def fit_learner(
    name: str, x: np.ndarray, arm: np.ndarray, y: np.ndarray, treatments: int, config: MLPConfig
) -> nn.Module:
    """The named learner for every treatment 1..treatments against arm 0, as one module
    ``features -> uplift[n, T]``."""
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; known: {list(LEARNERS)}")
    arms = treatments + 1
    control = arm == 0
    if name == "tarnet":
        return ArmDifference(fit_shared_outcome(x, arm, y, arms, config))
    if name == "response":
        base = float(y[control].mean())
        return UpliftGraph(
            [
                Probability(fit_mlp(x[arm == t], y[arm == t], "logistic", config), base)
                for t in range(1, arms)
            ]
        )
    if name == "t_learner":
        m0 = fit_mlp(x[control], y[control], "logistic", config)
        return UpliftGraph(
            [
                Difference(fit_mlp(x[arm == t], y[arm == t], "logistic", config), m0)
                for t in range(1, arms)
            ]
        )
    if name == "x_learner":
        mu = _prob(fit_shared_outcome(x, arm, y, arms, config), x)
        heads: list[nn.Module] = []
        for t in range(1, arms):
            treated = arm == t
            tau1 = fit_mlp(x[treated], y[treated] - mu[treated, 0], "mse", config)
            tau0 = fit_mlp(x[control], mu[control, t] - y[control], "mse", config)
            e = treated.sum() / (treated.sum() + control.sum())
            # Künzel's weighting g(x) = e: where the treated are the larger arm, their
            # outcome model is the better known, so the controls' imputations count more.
            heads.append(Blend(tau0, tau1, float(e)))
        return UpliftGraph(heads)
    return UpliftGraph(_dr_heads(x, arm, y, arms, config))


def fit_bagged(
    name: str,
    x: np.ndarray,
    arm: np.ndarray,
    y: np.ndarray,
    treatments: int,
    config: MLPConfig,
    bags: int,
) -> nn.Module:
    """``bags`` fits of the learner with different seeds (and so different early-stopping
    holdouts), averaged: the same bias, less variance of the estimated uplift."""
    if bags <= 1:
        return fit_learner(name, x, arm, y, treatments, config)
    return Mean(
        [
            fit_learner(name, x, arm, y, treatments, replace(config, seed=config.seed + 1000 * b))
            for b in range(bags)
        ]
    )


def _dr_heads(
    x: np.ndarray, arm: np.ndarray, y: np.ndarray, arms: int, config: MLPConfig
) -> list[nn.Module]:
    """Doubly robust pseudo-outcomes with outcome models cross-fitted on two folds."""
    fold = np.random.default_rng(config.seed).integers(0, 2, len(y))
    mu = np.zeros((len(y), arms))
    for k in (0, 1):
        fit = fold != k
        outcome = fit_shared_outcome(x[fit], arm[fit], y[fit], arms, config)
        mu[fold == k] = _prob(outcome, x[fold == k])
    heads: list[nn.Module] = []
    for t in range(1, arms):
        rows = np.flatnonzero((arm == 0) | (arm == t))
        w = (arm[rows] == t).astype(np.float64)
        e = w.mean()
        yr, m0, m1 = y[rows].astype(np.float64), mu[rows, 0], mu[rows, t]
        phi = m1 - m0 + w * (yr - m1) / e - (1 - w) * (yr - m0) / (1 - e)
        heads.append(fit_mlp(x[rows], phi, "mse", config))
    return heads


def predict_uplift(graph: nn.Module, x: np.ndarray) -> np.ndarray:
    """[n, T] float64 uplift estimates."""
    return _predict(graph, x).astype(np.float64)
