"""K-means user segments over standardised profile features, k chosen by silhouette or given.

Features are log1p-transformed (counts, money and day spans are heavy-tailed, and K-means on
raw values would split on the few largest spenders), missing values take the column's maximum
(a never-engaged user's recency is "as far as it gets"), then each column is z-scored. Segment
ids are ordered by size, 0 the largest, so that reruns with the same seed give the same ids.
Everything the engine needs to place a new user (means, stds, centroids) is in
:meth:`KMeansSegments.to_dict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from training.errors import NotEnoughData

DEFAULT_FEATURES: tuple[str, ...] = (
    "recency_days",
    "frequency",
    "monetary",
    "n_events",
    "days_since_first_seen",
)
DEFAULT_K_RANGE: tuple[int, ...] = tuple(range(2, 9))
# Choosing k by silhouette needs 2 <= k < users: the default range needs three users.
MIN_USERS = 3
# Silhouette is quadratic in rows: score k on a seeded sample of at most this many users.
SILHOUETTE_SAMPLE = 5_000


@dataclass(frozen=True)
class KMeansSegments:
    """Segment per user, and the fitted transform and centroids to reproduce it."""

    assignments: pl.DataFrame  # user_id, segment
    k: int
    features: list[str]
    fill: list[float]  # replaces a missing raw value, per feature
    mean: list[float]  # of log1p(feature), per feature
    std: list[float]
    centroids: list[list[float]]  # in the standardised space, row = segment id
    silhouette: dict[int, float] = field(default_factory=dict)  # per k tried
    seed: int = 0

    def assign(self, profiles: pl.DataFrame) -> npt.NDArray[np.int32]:
        """The nearest segment for each row of ``profiles`` (e.g. users new since training)."""
        z = _standardise(
            _raw(profiles, self.features),
            np.array(self.fill),
            np.array(self.mean),
            np.array(self.std),
        )
        centroids = np.asarray(self.centroids, dtype=np.float64)
        distances: npt.NDArray[np.float64] = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(
            axis=2
        )
        nearest: npt.NDArray[np.int32] = distances.argmin(axis=1).astype(np.int32)
        return nearest

    def to_dict(self) -> dict[str, object]:
        return {
            "k": self.k,
            "features": self.features,
            "transform": "(log1p(feature, missing -> fill) - mean) / std",
            "fill": self.fill,
            "mean": self.mean,
            "std": self.std,
            "centroids": self.centroids,
            "silhouette": {str(k): v for k, v in self.silhouette.items()},
            "seed": self.seed,
        }


def kmeans_segments(
    profiles: pl.DataFrame,
    features: Sequence[str] = DEFAULT_FEATURES,
    k: int | None = None,
    k_range: Sequence[int] = DEFAULT_K_RANGE,
    seed: int = 0,
) -> KMeansSegments:
    """Cluster users on ``features`` of :func:`~training.profiles.user_profiles` output.

    With ``k`` None, every k in ``k_range`` below the number of users is fitted and the one
    with the best silhouette (ties: the smaller k) wins.
    """
    raw = _raw(profiles, features)
    n_users = raw.shape[0]
    fill = np.nanmax(raw, axis=0, initial=0.0)
    x = np.log1p(np.where(np.isnan(raw), fill, raw))
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0  # a constant feature carries no information; keep it at 0
    z = _standardise(raw, fill, mean, std)
    candidates = [k] if k is not None else [c for c in k_range if 2 <= c < n_users]
    if not candidates or (k is not None and not 1 <= k <= n_users):
        raise NotEnoughData(
            f"cannot cluster {n_users} users into {k or list(k_range)} segments"
            + (
                ""
                if k is not None
                else f" (k = {min(k_range, default=2)} needs "
                f"{max(2, min(k_range, default=2)) + 1} users)"
            )
        )
    # One thread per pool: sklearn's OpenMP and OpenBLAS pools fought over 2 cores and made
    # K-means on 4k users ~50x slower (2.4 s vs 0.04 s per fit).
    with threadpool_limits(limits=1):
        fits = {c: _fit(z, c, seed) for c in candidates}
        scores = {
            c: _silhouette(z, labels, seed) for c, (labels, _) in fits.items() if 1 < c < n_users
        }
    chosen = k if k is not None else max(candidates, key=lambda c: (scores[c], -c))
    labels, centroids = _ordered_by_size(*fits[chosen])
    assignments = pl.DataFrame({"user_id": profiles["user_id"], "segment": labels.astype(np.int32)})
    return KMeansSegments(
        assignments=assignments,
        k=chosen,
        features=list(features),
        fill=fill.tolist(),
        mean=mean.tolist(),
        std=std.tolist(),
        centroids=centroids.tolist(),
        silhouette=scores,
        seed=seed,
    )


def _raw(profiles: pl.DataFrame, features: Sequence[str]) -> npt.NDArray[np.float64]:
    missing = [f for f in features if f not in profiles.columns]
    if missing:
        raise ValueError(f"profiles lack the feature column(s) {missing}")
    raw = profiles.select([pl.col(f).cast(pl.Float64) for f in features]).to_numpy()
    if np.nanmin(raw, initial=0.0) < 0:
        raise ValueError("segment features must be non-negative (they are log1p-transformed)")
    return raw


def _standardise(
    raw: npt.NDArray[np.float64],
    fill: npt.NDArray[np.float64],
    mean: npt.NDArray[np.float64],
    std: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    return (np.log1p(np.where(np.isnan(raw), fill, raw)) - mean) / std


def _fit(
    z: npt.NDArray[np.float64], k: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    return model.labels_.astype(np.int64), model.cluster_centers_


def _silhouette(z: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], seed: int) -> float:
    if np.unique(labels).size < 2:
        return -1.0
    sample = min(z.shape[0], SILHOUETTE_SAMPLE)
    return float(silhouette_score(z, labels, sample_size=sample, random_state=seed))


def _ordered_by_size(
    labels: npt.NDArray[np.int64], centroids: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    sizes = np.bincount(labels, minlength=centroids.shape[0])
    # Largest first; equal sizes by centroid coordinates so the order never depends on luck.
    order = np.lexsort((*centroids.T[::-1], -sizes))
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.size)
    return new_id[labels], centroids[order]
