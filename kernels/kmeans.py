"""k-means (Lloyd) for the IVF coarse quantiser: BLAS-backed NumPy, seeded and deterministic."""

import numpy as np

# k-means++ seeds from at most this many rows per cluster (its cost is n_rows x n_clusters x d).
_SEED_ROWS_PER_CLUSTER = 16
# Rows per assignment chunk: bounds the [chunk, n_clusters] score matrix to ~256 MiB at 1024 lists.
_CHUNK = 1 << 16


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, spherical: bool) -> np.ndarray:
    """Index of each row's nearest centroid: L2, or largest inner product when `spherical`."""
    out = np.empty(x.shape[0], dtype=np.int64)
    half_sq = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    for lo in range(0, x.shape[0], _CHUNK):
        scores = x[lo : lo + _CHUNK] @ centroids.T
        if not spherical:
            # argmin ||x - c||^2 = argmax (x.c - ||c||^2 / 2)
            scores -= half_sq
        out[lo : lo + _CHUNK] = np.argmax(scores, axis=1)
    return out


def _unit(c: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return np.divide(c, norms, out=np.zeros_like(c), where=norms > 0)


def kmeans_plus_plus(x: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance.

    Random-row seeding leaves Lloyd stuck with two centres in one cluster; this avoids most of it.
    """
    centroids = np.empty((n_clusters, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(x.shape[0])]
    sq_norms = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq_norms - 2 * (x @ centroids[0]) + centroids[0] @ centroids[0], 0)
    for c in range(1, n_clusters):
        total = d2.sum()
        if total > 0:
            pick = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
            pick = min(pick, x.shape[0] - 1)
        else:
            pick = int(rng.integers(x.shape[0]))
        centroids[c] = x[pick]
        d2 = np.minimum(d2, np.maximum(sq_norms - 2 * (x @ x[pick]) + x[pick] @ x[pick], 0))
    return centroids


def kmeans(
    x: np.ndarray, n_clusters: int, *, seed: int = 0, n_iter: int = 20, spherical: bool = False
) -> np.ndarray:
    """Centroids float32 [n_clusters, d] of the rows of `x` (float32, n >= n_clusters).

    Seeded by k-means++; an emptied cluster is re-seeded from a random row.
    `spherical` keeps centroids at unit norm (for cosine retrieval on unit-norm rows).
    """
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, {n}]")
    rng = np.random.default_rng(seed)
    n_seed = min(n, _SEED_ROWS_PER_CLUSTER * n_clusters)
    seed_rows = x if n_seed == n else x[np.sort(rng.choice(n, n_seed, replace=False))]
    centroids = kmeans_plus_plus(seed_rows, n_clusters, rng)
    for _ in range(n_iter):
        assign = nearest_centroid(x, centroids, spherical)
        counts = np.bincount(assign, minlength=n_clusters)
        order = np.argsort(assign, kind="stable")
        filled = np.flatnonzero(counts)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[filled]
        sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
        centroids[filled] = (sums / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(counts == 0)
        centroids[empty] = x[rng.choice(n, empty.size, replace=False)]
        if spherical:
            centroids = _unit(centroids).astype(np.float32)
    return centroids
