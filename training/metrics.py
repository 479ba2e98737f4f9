"""Offline evaluation metrics as pure NumPy functions, looked up by name in :data:`METRICS`.

Classification (CTR) metrics take binary labels and predicted probabilities or scores.
Ranking metrics take a predicted top-k id matrix ``[n_users, k]`` (row u: user u's
recommendations, best first, padded with -1) and the held-out relevant items of the same
users, either as a :class:`Relevance` (CSR arrays) or as a list of id arrays. Relevance is
binary and duplicates in a user's relevant items count once; users with no relevant items are
left out of the averages, as in Microsoft Recommenders. Report names carry the cutoff
(``recall@20``); :func:`evaluate_ranking` and :func:`evaluate_classification` parse them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BinStrategy = Literal["uniform", "quantile"]


# --- classification ---------------------------------------------------------------------------


def auc(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """ROC AUC: the probability that a random positive scores above a random negative.

    Computed from ranks (Mann-Whitney U); tied scores count one half, as in scikit-learn.
    """
    y, score = _labels_and_scores(y_true, y_score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct score: ties share the mean of their ranks.
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y_true: npt.ArrayLike, y_prob: npt.ArrayLike, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy (natural log); probabilities clipped to [eps, 1 - eps]."""
    y, p = _labels_and_probabilities(y_true, y_prob)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per non-empty bin: mean predicted probability, observed positive rate, row count."""

    bin_edges: FloatArray
    mean_predicted: FloatArray
    fraction_positive: FloatArray
    counts: IntArray

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {
            "bin_edges": self.bin_edges.tolist(),
            "mean_predicted": self.mean_predicted.tolist(),
            "fraction_positive": self.fraction_positive.tolist(),
            "counts": self.counts.tolist(),
        }


def reliability_curve(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    n_bins: int = 10,
    strategy: BinStrategy = "uniform",
) -> ReliabilityCurve:
    """Bin predictions and compare each bin's mean prediction with its positive rate.

    ``uniform``: equal-width bins over [0, 1] (a prediction of exactly 1 falls in the last).
    ``quantile``: equal-mass bins at the predictions' quantiles, better when predictions are
    concentrated (low CTRs put nearly everything in the first equal-width bin); tied
    predictions never straddle a bin edge, so bins may be fewer than ``n_bins``.
    Empty bins are left out.
    """
    y, p = _labels_and_probabilities(y_true, y_prob)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    elif strategy == "quantile":
        edges = np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
        bins = np.searchsorted(edges[1:-1], p, side="right")
    else:
        raise ValueError(f"unknown binning strategy {strategy!r}; use 'uniform' or 'quantile'")
    counts = np.bincount(bins, minlength=n_bins)
    filled = counts > 0
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y.astype(np.float64), minlength=n_bins)
    return ReliabilityCurve(
        bin_edges=edges,
        mean_predicted=sum_p[filled] / counts[filled],
        fraction_positive=sum_y[filled] / counts[filled],
        counts=counts[filled].astype(np.int64),
    )


def ece(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    n_bins: int = 10,
    strategy: BinStrategy = "uniform",
) -> float:
    """Expected calibration error: sum over bins of (bin share) x |positive rate - mean prediction|.

    Bins as in :func:`reliability_curve` (default: 10 equal-width bins, Guo et al. 2017; pass
    ``strategy="quantile"`` for equal-mass bins).
    """
    curve = reliability_curve(y_true, y_prob, n_bins, strategy)
    share = curve.counts / curve.counts.sum()
    return float(np.sum(share * np.abs(curve.fraction_positive - curve.mean_predicted)))


def _labels_and_scores(
    y_true: npt.ArrayLike, y_score: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y = np.asarray(y_true)
    score = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or y.shape != score.shape:
        raise ValueError(f"labels {y.shape} and predictions {score.shape} must be 1-D and match")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if not np.isfinite(score).all():
        raise ValueError("predictions must be finite")
    return y.astype(bool), score


def _labels_and_probabilities(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y, p = _labels_and_scores(y_true, y_prob)
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must lie in [0, 1]")
    return y, p


# --- ranking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relevance:
    """Held-out relevant item ids per user, CSR style: user u has ``indices[indptr[u]:indptr[u+1]]``."""

    indptr: IntArray
    indices: IntArray

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or self.indptr.size == 0 or self.indptr[0] != 0:
            raise ValueError("indptr must be 1-D and start at 0")
        if np.any(np.diff(self.indptr) < 0) or self.indptr[-1] != self.indices.size:
            raise ValueError("indptr must be non-decreasing and end at len(indices)")

    @classmethod
    def from_lists(cls, items: Sequence[npt.ArrayLike]) -> Relevance:
        arrays = [np.asarray(a, dtype=np.int64).ravel() for a in items]
        sizes = np.array([a.size for a in arrays], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        indices = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
        return cls(indptr, indices.astype(np.int64))

    @property
    def n_users(self) -> int:
        return self.indptr.size - 1


RelevantItems = Relevance | Sequence[npt.ArrayLike]


def precision_at_k(top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None) -> float:
    """Mean over users of hits / k."""
    return float(np.mean(precision_per_user(top_k, relevant, k)))


def recall_at_k(top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None) -> float:
    """Mean over users of hits / |relevant| (Microsoft Recommenders' definition).

    Not hits / min(k, |relevant|): a user with more relevant items than k cannot reach 1.
    """
    return float(np.mean(recall_per_user(top_k, relevant, k)))


def hitrate_at_k(top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None) -> float:
    """Share of users with at least one relevant item in their top k."""
    return float(np.mean(hitrate_per_user(top_k, relevant, k)))


def ndcg_at_k(top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None) -> float:
    """Mean over users of DCG / ideal DCG with binary relevance and 1 / log2(rank + 1) gains.

    The ideal ranking puts min(k, |relevant|) relevant items first.
    """
    return float(np.mean(ndcg_per_user(top_k, relevant, k)))


# The per-user values the means above average (users with relevant items, in row order): what
# a bootstrap over users resamples.


def precision_per_user(
    top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None
) -> FloatArray:
    hits, _, k = _hits(top_k, relevant, k)
    return hits.sum(axis=1) / k


def recall_per_user(
    top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None
) -> FloatArray:
    hits, n_relevant, _ = _hits(top_k, relevant, k)
    return hits.sum(axis=1) / n_relevant


def hitrate_per_user(
    top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None
) -> FloatArray:
    hits, _, _ = _hits(top_k, relevant, k)
    return hits.any(axis=1).astype(np.float64)


def ndcg_per_user(
    top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None = None
) -> FloatArray:
    hits, n_relevant, k = _hits(top_k, relevant, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_relevant, k) - 1]
    values: FloatArray = (hits @ discount) / ideal
    return values


def bootstrap_means(values: npt.ArrayLike, resamples: int = 1000, seed: int = 0) -> FloatArray:
    """Means of ``resamples`` bootstrap resamples of ``values`` (rows drawn with replacement);
    a paired comparison passes per-row differences."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("bootstrap needs a non-empty 1-D array")
    rng = np.random.default_rng(seed)
    # In chunks of about 10M draws: a million users must not need 8 GB of indices.
    chunk = max(1, 10_000_000 // x.size)
    return np.concatenate(
        [
            x[rng.integers(0, x.size, (min(chunk, resamples - start), x.size))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )


def bootstrap_interval(
    values: npt.ArrayLike, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(bootstrap_means(values, resamples, seed), [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_se(values: npt.ArrayLike, resamples: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of the mean of ``values``."""
    return float(np.std(bootstrap_means(values, resamples, seed)))


def coverage(top_k: npt.ArrayLike, n_items: int, k: int | None = None) -> float:
    """Catalogue coverage: distinct items recommended in anyone's top k / catalogue size."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    top, k = _top_matrix(top_k, k)
    recommended = top[:, :k]
    return float(np.unique(recommended[recommended >= 0]).size / n_items)


def _top_matrix(top_k: npt.ArrayLike, k: int | None) -> tuple[IntArray, int]:
    top = np.asarray(top_k)
    if top.ndim != 2 or not np.issubdtype(top.dtype, np.integer):
        raise ValueError(f"top_k must be a 2-D integer matrix, got {top.dtype} {top.shape}")
    k = top.shape[1] if k is None else k
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return top.astype(np.int64, copy=False), k


def _hits(
    top_k: npt.ArrayLike, relevant: RelevantItems, k: int | None
) -> tuple[npt.NDArray[np.float64], IntArray, int]:
    """Hit matrix [users with relevant items, k], their relevant-set sizes, and k.

    A list with fewer than k columns counts as padded with -1.
    """
    top, k = _top_matrix(top_k, k)
    rel = relevant if isinstance(relevant, Relevance) else Relevance.from_lists(relevant)
    if rel.n_users != top.shape[0]:
        raise ValueError(f"top_k has {top.shape[0]} rows but relevance has {rel.n_users} users")
    top = top[:, :k]
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    _check_unique_rows(top)
    n_users = top.shape[0]
    rel_users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr))
    # Compact the ids so that (user, item) pairs encode into one int64 without overflow.
    ids, inverse = np.unique(np.concatenate([top.ravel(), rel.indices]), return_inverse=True)
    width = ids.size
    pred_codes = inverse[: top.size].reshape(top.shape)
    rel_keys = np.unique(rel_users * width + inverse[top.size :])
    n_relevant = np.bincount(rel_keys // width, minlength=n_users)
    pred_keys = np.arange(n_users, dtype=np.int64)[:, None] * width + pred_codes
    hits = np.isin(pred_keys, rel_keys) & (top >= 0)
    evaluated = n_relevant > 0
    if not evaluated.any():
        raise ValueError("no user has relevant items to evaluate against")
    return hits[evaluated].astype(np.float64), n_relevant[evaluated], k


def _check_unique_rows(top: IntArray) -> None:
    ordered = np.sort(top, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        raise ValueError(f"top_k row {row} recommends an item twice")


# --- lookup by name ---------------------------------------------------------------------------

METRICS: dict[str, Callable[..., Any]] = {
    "auc": auc,
    "logloss": logloss,
    "ece": ece,
    "reliability_curve": reliability_curve,
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hitrate": hitrate_at_k,
    "coverage": coverage,
}
_RANKING = ("precision", "recall", "ndcg", "hitrate")
PER_USER: dict[str, Callable[..., FloatArray]] = {
    "precision": precision_per_user,
    "recall": recall_per_user,
    "ndcg": ndcg_per_user,
    "hitrate": hitrate_per_user,
}
_CLASSIFICATION = ("auc", "logloss", "ece")


def evaluate_ranking(
    top_k: npt.ArrayLike,
    relevant: RelevantItems,
    names: Sequence[str],
    n_items: int | None = None,
) -> dict[str, float]:
    """Compute report metrics such as ``recall@20``, ``ndcg@10``, ``coverage`` (needs n_items).

    ``coverage`` without a cutoff uses the full width of ``top_k``.
    """
    rel = relevant if isinstance(relevant, Relevance) else Relevance.from_lists(relevant)
    results: dict[str, float] = {}
    for name in names:
        base, k = _parse_name(name)
        if base == "coverage":
            if n_items is None:
                raise ValueError("coverage needs n_items, the catalogue size")
            results[name] = coverage(top_k, n_items, k)
        elif base in _RANKING:
            if k is None:
                raise ValueError(f"{name!r} needs a cutoff, e.g. {base}@10")
            results[name] = METRICS[base](top_k, rel, k)
        else:
            raise ValueError(f"unknown ranking metric {name!r}")
    return results


def evaluate_classification(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike, names: Sequence[str] = _CLASSIFICATION
) -> dict[str, float]:
    """Compute scalar CTR metrics by name (``auc``, ``logloss``, ``ece``)."""
    unknown = [n for n in names if n not in _CLASSIFICATION]
    if unknown:
        raise ValueError(f"unknown classification metric(s) {unknown}; use {list(_CLASSIFICATION)}")
    return {name: METRICS[name](y_true, y_prob) for name in names}


def _parse_name(name: str) -> tuple[str, int | None]:
    base, _, cutoff = name.partition("@")
    if not cutoff:
        return base, None
    if not cutoff.isdigit():
        raise ValueError(f"bad cutoff in metric name {name!r}")
    return base, int(cutoff)
