"""Off-policy estimators: the value of a target policy from decisions a logging policy made.

Each unit is one (decision, slot): ``reward`` of the candidate the logger put there, ``weight``
= pi_target(that candidate | slot) / pi_logging(that candidate | slot), and for the doubly
robust estimator a reward model's prediction for the logged candidate (``q_logged``) and its
expectation under the target (``q_target``: for a deterministic target, the prediction for the
target's pick). ``group`` names each unit's decision: a decision's slots are summed into one
per-decision value, so intervals treat decisions, not slots, as the independent draws.

- IPS: mean over decisions of sum_slots w r (unbiased when the logged propensities are right).
- SNIPS: per slot sum(w r) / sum(w) (biased, O(1/n), far less variance), summed over slots.
- DR: mean over decisions of sum_slots q_target + w (r - q_logged).

Intervals: normal (CLT) on the per-decision values; for SNIPS, the delta method (its influence
function per decision). :func:`bootstrap` gives percentile intervals for any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    # Decisions behind it, and the effective sample size of the weights (sum w)^2 / sum w^2.
    decisions: int
    effective_n: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def _groups(n: int, group: np.ndarray | None) -> tuple[np.ndarray, int]:
    if group is None:
        return np.arange(n), n
    _, index = np.unique(group, return_inverse=True)
    return index, int(index.max()) + 1 if n else 0


def _per_decision(values: np.ndarray, index: np.ndarray, decisions: int) -> np.ndarray:
    return np.bincount(index, weights=values, minlength=decisions)


def _ess(weight: np.ndarray) -> float:
    total = float(np.sum(weight**2))
    return float(np.sum(weight) ** 2 / total) if total > 0 else 0.0


def _mean_estimate(per_decision: np.ndarray, level: float, ess: float) -> Estimate:
    n = len(per_decision)
    value = float(per_decision.mean()) if n else float("nan")
    se = float(per_decision.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    half = _z(level) * se
    return Estimate(value, value - half, value + half, n, ess)


def ips(
    reward: np.ndarray,
    weight: np.ndarray,
    group: np.ndarray | None = None,
    level: float = 0.95,
) -> Estimate:
    """Inverse propensity scoring."""
    reward, weight = np.asarray(reward, float), np.asarray(weight, float)
    index, n = _groups(len(reward), group)
    return _mean_estimate(_per_decision(weight * reward, index, n), level, _ess(weight))


def snips(
    reward: np.ndarray,
    weight: np.ndarray,
    group: np.ndarray | None = None,
    slot: np.ndarray | None = None,
    level: float = 0.95,
) -> Estimate:
    """Self-normalised IPS, normalised per slot (``slot``: each unit's slot; None: one)."""
    reward, weight = np.asarray(reward, float), np.asarray(weight, float)
    index, n = _groups(len(reward), group)
    slots = np.zeros(len(reward), dtype=np.int64) if slot is None else np.asarray(slot)
    value = 0.0
    influence = np.zeros(n)
    for s in np.unique(slots):
        m = slots == s
        w_sum = float(weight[m].sum())
        if w_sum <= 0:
            continue
        v = float((weight[m] * reward[m]).sum() / w_sum)
        value += v
        # Delta method: each decision's share of (w r - v w), over the mean weight per decision.
        residual = _per_decision(weight[m] * (reward[m] - v), index[m], n)
        influence += residual / (w_sum / n)
    se = float(influence.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    half = _z(level) * se
    return Estimate(value, value - half, value + half, n, _ess(weight))


def doubly_robust(
    reward: np.ndarray,
    weight: np.ndarray,
    q_logged: np.ndarray,
    q_target: np.ndarray,
    group: np.ndarray | None = None,
    level: float = 0.95,
) -> Estimate:
    """Doubly robust: the reward model's value of the target, corrected by the weighted
    residuals of the logged rewards."""
    reward, weight = np.asarray(reward, float), np.asarray(weight, float)
    terms = np.asarray(q_target, float) + weight * (reward - np.asarray(q_logged, float))
    index, n = _groups(len(reward), group)
    return _mean_estimate(_per_decision(terms, index, n), level, _ess(weight))


def on_policy(reward: np.ndarray, group: np.ndarray | None = None, level: float = 0.95) -> Estimate:
    """The logging policy's own value: the mean per-decision reward."""
    reward = np.asarray(reward, float)
    index, n = _groups(len(reward), group)
    return _mean_estimate(_per_decision(reward, index, n), level, float(n))


def bootstrap(
    estimator: Callable[..., Estimate],
    arrays: dict[str, np.ndarray],
    group: np.ndarray | None = None,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``estimator(**arrays)`` with a percentile interval from resampling decisions."""
    point = estimator(**arrays, group=group)
    n_units = len(next(iter(arrays.values())))
    index, n = _groups(n_units, group)
    rng = np.random.default_rng(seed)
    sizes = np.bincount(index, minlength=n)
    by_group = np.argsort(index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, n, n)  # decisions drawn with replacement
        lens = sizes[picked]
        # Draw j's units keep their order and become decision j of the resample.
        new_group = np.repeat(np.arange(n), lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        take = by_group[np.repeat(starts[picked], lens) + within]
        values.append(estimator(**{k: v[take] for k, v in arrays.items()}, group=new_group).value)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(point.value, float(low), float(high), point.decisions, point.effective_n)
