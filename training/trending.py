"""What is popular now: item scores from the positives of a recent window or with weights that
decay exponentially with age, and the candidate time scales to tune them over.

Times are seconds since the epoch (float64). Every score breaks ties by all-time popularity
(added below the resolution of the time-aware score), so items nobody touched lately still
come in a stable, sensible order. Exponential decay ranks the same at any later moment (every weight is
multiplied by the same factor), which is why the shipped ``trending`` model is the decayed
one: its order does not go stale between training and serving.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DAY_S = 86_400.0
# The windows a shop would try on a log of months (1 day to a month) ...
BASE_DAYS: tuple[float, ...] = (1.0, 3.0, 7.0, 14.0, 30.0)
# ... and the same spread as shares of the log's span, for logs of days or of years.
SPAN_SHARES: tuple[float, ...] = (1 / 128, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
# Scales closer than this factor rank items almost alike: trying both only adds noise.
SCALE_GAP = 1.5

FloatArray = npt.NDArray[np.float64]


def time_scales(span_days: float) -> tuple[float, ...]:
    """Candidate windows / half-lives in days for a log spanning ``span_days``: the base days
    up to half the span, then each of :data:`SPAN_SHARES` of the span that is not within a
    factor :data:`SCALE_GAP` of one already chosen (two significant digits), ascending."""
    span = max(float(span_days), 1e-9)
    chosen = [d for d in BASE_DAYS if d <= span / 2]
    for share in SPAN_SHARES:
        d = float(f"{share * span:.2g}")
        if all(max(d, c) / min(d, c) >= SCALE_GAP for c in chosen):
            chosen.append(d)
    return tuple(sorted(chosen))


def _with_ties_broken(score: FloatArray, items: np.ndarray, n_items: int, gap: float) -> FloatArray:
    """``score`` plus up to ``gap`` times the item's share of the top all-time count."""
    counts = np.bincount(items, minlength=n_items).astype(np.float64)
    return score + gap * counts / (counts.max(initial=0.0) + 1.0)


def window_scores(
    items: np.ndarray, times: FloatArray, n_items: int, now: float, window_days: float
) -> FloatArray:
    """Positives per item in the ``window_days`` up to ``now`` (ties: all-time count)."""
    recent = (times > now - window_days * DAY_S) & (times <= now)
    score = np.bincount(items[recent], minlength=n_items).astype(np.float64)
    # Counts are whole numbers: half a unit never reorders two of them.
    return _with_ties_broken(score, items, n_items, 0.5)


def decay_weights(times: FloatArray, now: float, half_life_days: float | None) -> FloatArray:
    """0.5 ** (age / half-life) per event, age counted back from ``now`` (never negative);
    a half-life of None weighs every event 1 (no decay: all-time popularity)."""
    if half_life_days is None:
        return np.ones(times.shape, dtype=np.float64)
    age = np.maximum(now - times, 0.0) / DAY_S
    weights: FloatArray = np.exp2(-age / half_life_days)
    return weights


def decayed_scores(
    items: np.ndarray, times: FloatArray, n_items: int, now: float, half_life_days: float | None
) -> FloatArray:
    """Sum of :func:`decay_weights` per item (ties: all-time count)."""
    weights = decay_weights(times, now, half_life_days)
    score = np.bincount(items, weights=weights, minlength=n_items)
    # Weights of old events shrink towards 0 (and below float32's range): what has decayed
    # to a millionth of the top score is ordered by all-time popularity instead.
    return _with_ties_broken(score, items, n_items, 1e-6 * float(score.max(initial=0.0) or 1.0))
