"""Uplift evaluation on randomised rows as pure functions: Qini and uplift curves, their areas,
and the incremental conversions of a targeting policy estimated by inverse propensity weighting.

For one treatment against control, customers sorted by score (best first), at the top ``k``:
``Qini(k) = Y_t(k) - Y_c(k) * N_t(k) / N_c(k)`` (incremental conversions among the top k, the
control's rate scaled to the treated count; Radcliffe 2007) and the uplift curve
``U(k) = (Y_t(k) / N_t(k) - Y_c(k) / N_c(k)) * k`` (Rzepakowski & Jaroszewicz). Areas are
means over k = 1..n divided by n, minus random targeting's (the straight line to the end
point), so random scores 0 and better ones more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    fraction: np.ndarray  # k / n, k = 0..n
    qini: np.ndarray  # Qini(k), per customer (divided by n)
    uplift: np.ndarray  # U(k), per customer


def curves(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> Curve:
    """Qini and uplift curves for a binary treatment (rows: treated or control only)."""
    order = np.argsort(-score, kind="stable")
    t, yy = treated[order].astype(np.float64), y[order].astype(np.float64)
    nt, nc = np.cumsum(t), np.cumsum(1 - t)
    yt, yc = np.cumsum(t * yy), np.cumsum((1 - t) * yy)
    n = len(score)
    with np.errstate(divide="ignore", invalid="ignore"):
        qini = np.where(nc > 0, yt - yc * nt / nc, yt)
        rate_t = np.where(nt > 0, yt / nt, 0.0)
        rate_c = np.where(nc > 0, yc / nc, 0.0)
    uplift = (rate_t - rate_c) * np.arange(1, n + 1)
    zero = np.zeros(1)
    return Curve(
        fraction=np.arange(n + 1) / max(n, 1),
        qini=np.concatenate([zero, qini]) / max(n, 1),
        uplift=np.concatenate([zero, uplift]) / max(n, 1),
    )


def _area_over_random(values: np.ndarray) -> float:
    random = np.linspace(0.0, values[-1], len(values))
    return float(np.mean(values - random))


def qini_coefficient(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> float:
    return _area_over_random(curves(score, treated, y).qini)


def auuc(score: np.ndarray, treated: np.ndarray, y: np.ndarray) -> float:
    """Area under the uplift curve above random targeting's."""
    return _area_over_random(curves(score, treated, y).uplift)


@dataclass(frozen=True)
class PolicyValue:
    """Estimated incremental conversions of a policy, per customer of the population, with its
    standard error (IPW on randomised arms is unbiased, not low-variance)."""

    per_customer: float
    se: float


def policy_value(
    choice: np.ndarray, arm: np.ndarray, y: np.ndarray, shares: np.ndarray
) -> PolicyValue:
    """Incremental conversions of contacting each customer with treatment ``choice[i]``
    (1..T; 0 = not contacted) rather than nobody, from randomised ``arm`` with known ``shares``
    (share of each arm, 0 = control): each row contributes ``1[arm = choice] y / e_choice -
    1[arm = 0] y / e_0`` where it is contacted."""
    contacted = choice > 0
    yy = y.astype(np.float64)
    gain = np.where(contacted & (arm == choice), yy / shares[choice], 0.0)
    loss = np.where(contacted & (arm == 0), yy / shares[0], 0.0)
    contribution = gain - loss
    n = len(y)
    return PolicyValue(float(contribution.mean()), float(contribution.std() / np.sqrt(max(n, 1))))


def top_fraction_policy(uplift: np.ndarray, fraction: float) -> np.ndarray:
    """Choice per customer: the best treatment (1-based) of the top ``fraction`` by best
    estimated uplift, positive estimates only; 0 elsewhere."""
    best = np.argmax(uplift, axis=1)
    value = uplift[np.arange(len(uplift)), best]
    k = round(fraction * len(uplift))
    top = np.argsort(-value, kind="stable")[:k]
    top = top[value[top] > 0]
    choice = np.zeros(len(uplift), dtype=np.int64)
    choice[top] = best[top] + 1
    return choice


def uplift_at_fraction(
    uplift: np.ndarray, arm: np.ndarray, y: np.ndarray, shares: np.ndarray, fraction: float
) -> PolicyValue:
    """Estimated incremental conversions per customer of the plan contacting ``fraction``."""
    return policy_value(top_fraction_policy(uplift, fraction), arm, y, shares)
