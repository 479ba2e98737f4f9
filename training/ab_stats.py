"""The statistics of an A/B report as small pure functions: Wilson intervals, the pooled
two-proportion z-test, a normal interval for a mean, and the minimum detectable effect."""

from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()


def z_quantile(alpha: float) -> float:
    """The two-sided critical value: 1.96 for alpha = 0.05."""
    return _NORMAL.inv_cdf(1 - alpha / 2)


def wilson_interval(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there are no trials.

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage for rates
    near 0, which CTRs and conversion rates are.
    """
    if trials == 0:
        return 0.0, 1.0
    z = z_quantile(alpha)
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_ztest(
    control_successes: int, control_trials: int, successes: int, trials: int
) -> tuple[float, float]:
    """(z, two-sided p-value) for "the treatment's rate differs from the control's".

    Pooled standard error under the null of equal rates; z > 0 when the treatment is higher.
    Without trials, or when every trial succeeded or none did, there is no evidence: (0, 1).
    """
    if control_trials == 0 or trials == 0:
        return 0.0, 1.0
    pooled = (control_successes + successes) / (control_trials + trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control_trials + 1 / trials))
    if se == 0:
        return 0.0, 1.0
    z = (successes / trials - control_successes / control_trials) / se
    return z, 2 * _NORMAL.cdf(-abs(z))


def mean_interval(
    total: float, total_sq: float, n: int, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """(mean, low, high, standard error) of a per-unit mean from its sum and sum of squares.

    Normal approximation (central limit theorem), fine for the thousands of impressions an arm
    needs before the report judges it; with n = 0 everything is NaN.
    """
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = total / n
    variance = max(0.0, total_sq / n - mean * mean) * n / max(n - 1, 1)
    se = math.sqrt(variance / n)
    half = z_quantile(alpha) * se
    return mean, mean - half, mean + half, se


def welch_ztest(
    control_mean: float, control_se: float, mean: float, se: float
) -> tuple[float, float]:
    """(z, two-sided p) for a difference of two independent means with their standard errors."""
    spread = math.hypot(control_se, se)
    if not spread > 0:  # also False for NaN
        return 0.0, 1.0
    z = (mean - control_mean) / spread
    return z, 2 * _NORMAL.cdf(-abs(z))


def min_detectable_effect(
    rate: float, control_trials: int, trials: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute difference from ``rate`` that this sample detects with ``power``.

    ``(z_{1-alpha/2} + z_{power}) * sqrt(rate (1 - rate) (1/n_control + 1/n))``; infinite
    without trials.
    """
    if control_trials == 0 or trials == 0:
        return math.inf
    se = math.sqrt(rate * (1 - rate) * (1 / control_trials + 1 / trials))
    return detectable_difference(se, alpha, power)


def detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference that a two-sided test at ``alpha`` finds with ``power`` when
    the estimate of the difference has standard error ``se``."""
    return (z_quantile(alpha) + _NORMAL.inv_cdf(power)) * se
