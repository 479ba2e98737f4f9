"""IVF approximate retrieval: a k-means coarse quantiser, inverted lists, optional int8/float16 codes.

The index is a handful of plain arrays (`IVFIndex`) the trainer saves as `.npy` files in the
model bundle (`save_ivf` / `load_ivf`, no pickle) and the engine memory-maps.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from kernels._ivf_scan import KIND_FLOAT16, KIND_FLOAT32, KIND_INT8, ivf_scan
from kernels.exact import METRICS, check_items, empty_result, normalize_rows, prepare_queries
from kernels.filters import Exclusions, check_allowed, check_exclusions, sorted_exclusions
from kernels.kmeans import kmeans, nearest_centroid
from kernels.threads import apply_budget

_FIELDS = ("centroids", "offsets", "ids", "codes", "scales")
# Training rows per list for k-means: plenty for coarse centroids, and bounds build time.
_TRAIN_PER_LIST = 64
# Multiply-adds from which a search is worth the thread pool's wake-up.
_PARALLEL_FROM = 1 << 21


class IVFIndex(NamedTuple):
    """Inverted-file index over an item matrix, as plain arrays.

    centroids: float32 [n_lists, d] (unit norm when built for cosine).
    offsets: int64 [n_lists + 1]; list l holds positions offsets[l]:offsets[l + 1].
    ids: int64 [n_items]; item id at each position (ascending within a list).
    codes: compressed item rows in position order, int8 or float16 [n_items, d]; [0, d] if none.
    scales: float32 [n_items], per-row dequantisation scale of int8 codes; [0] otherwise.
    """

    centroids: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    codes: np.ndarray
    scales: np.ndarray


def build_ivf(
    items: np.ndarray, n_lists: int, seed: int = 0, *, metric: str = "ip", n_iter: int = 20
) -> IVFIndex:
    """Train the coarse quantiser on a seeded sample of `items` and fill the inverted lists.

    For metric "cosine" k-means runs on unit-normalised rows with unit centroids (spherical);
    search with the same metric. Deterministic for a given seed.
    """
    items = check_items(items)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    n, d = items.shape
    spherical = metric == "cosine"
    rng = np.random.default_rng(seed)
    n_train = min(n, _TRAIN_PER_LIST * n_lists)
    train = items[np.sort(rng.choice(n, n_train, replace=False))]
    if spherical:
        train = normalize_rows(train)
    centroids = kmeans(train, n_lists, seed=seed, n_iter=n_iter, spherical=spherical)
    assign = nearest_centroid(normalize_rows(items) if spherical else items, centroids, spherical)
    ids = np.argsort(assign, kind="stable").astype(np.int64)
    offsets = np.zeros(n_lists + 1, dtype=np.int64)
    np.cumsum(np.bincount(assign, minlength=n_lists), out=offsets[1:])
    return IVFIndex(
        centroids, offsets, ids, np.empty((0, d), dtype=np.int8), np.empty(0, dtype=np.float32)
    )


def quantize_ivf(items: np.ndarray, index: IVFIndex, dtype: str) -> IVFIndex:
    """The index plus compressed copies of the item rows in list order ("int8" or "float16").

    int8 uses a symmetric per-row scale (max |x| / 127). Searches then scan the codes and
    re-score a shortlist exactly from `items`, which may stay on disk as a memmap.
    """
    rows = items[index.ids]
    if dtype == "float16":
        return index._replace(codes=rows.astype(np.float16), scales=np.empty(0, np.float32))
    if dtype != "int8":
        raise ValueError("dtype must be 'int8' or 'float16'")
    scales = (np.abs(rows).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    codes = np.clip(np.rint(rows / safe), -127, 127).astype(np.int8)
    return index._replace(codes=codes, scales=scales)


def save_ivf(directory: str | Path, index: IVFIndex) -> None:
    """Write each array as `<directory>/ivf_<field>.npy`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in _FIELDS:
        np.save(directory / f"ivf_{name}.npy", getattr(index, name), allow_pickle=False)


def load_ivf(directory: str | Path, mmap_mode: str | None = None) -> IVFIndex:
    """Read an index written by `save_ivf`, into memory by default.

    A read-only memmap (`mmap_mode="r"`) works too but is a different Numba type: its search
    kernel compiles on first use instead of in `warmup()`.
    """
    directory = Path(directory)
    return IVFIndex(
        *(
            np.load(directory / f"ivf_{n}.npy", mmap_mode=mmap_mode, allow_pickle=False)
            for n in _FIELDS
        )
    )


def _kind(index: IVFIndex, n_items: int) -> int:
    if index.codes.shape[0] == 0:
        return KIND_FLOAT32
    if index.codes.shape[0] != n_items:
        raise ValueError("index codes do not cover the items")
    return KIND_INT8 if index.codes.dtype == np.int8 else KIND_FLOAT16


def _probe_lists(q: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """The nprobe lists with the highest query-centroid inner product, per query."""
    scores = q @ centroids.T
    if nprobe >= centroids.shape[0]:
        return np.broadcast_to(np.arange(centroids.shape[0]), scores.shape).copy()
    return np.ascontiguousarray(np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe])


def ivf_topk(
    queries: np.ndarray,
    items: np.ndarray,
    index: IVFIndex,
    k: int,
    nprobe: int,
    *,
    metric: str = "ip",
    exclude: Exclusions | None = None,
    allowed: np.ndarray | None = None,
    rescore: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k: scan the `nprobe` lists nearest each query; same contract as `topk`.

    Returned scores are exact (float32 rows of `items`). With compressed codes in the index,
    the lists are scanned on the codes, the best `rescore * k` kept and re-scored exactly.
    `nprobe = n_lists` gives the exact answer (float32 scan). Filters apply inside the scan.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if nprobe < 1 or rescore < 1 or k < 0:
        raise ValueError("nprobe and rescore must be >= 1, k >= 0")
    items = check_items(items)
    n_items, d = items.shape
    if index.ids.shape[0] != n_items or index.centroids.shape[1] != d:
        raise ValueError("index was built for a different item matrix")
    kind = _kind(index, n_items)
    q = prepare_queries(queries, d, metric)
    n_q = q.shape[0]
    indptr, indices = check_exclusions(exclude, n_q)
    mask = check_allowed(allowed, n_items)
    ids, scores = empty_result(n_q, k)
    k_eff = min(k, n_items)
    if n_q == 0 or k_eff == 0:
        return ids, scores
    n_lists = index.centroids.shape[0]
    nprobe = min(nprobe, n_lists)
    probes = _probe_lists(q, np.asarray(index.centroids), nprobe)
    k_short = k_eff if kind == KIND_FLOAT32 else min(n_items, rescore * k_eff)
    short_s = np.empty((n_q, k_short), dtype=np.float32)
    short_i = np.empty((n_q, k_short), dtype=np.int64)
    out_ids = np.empty((n_q, k_eff), dtype=np.int64)
    out_scores = np.empty((n_q, k_eff), dtype=np.float32)
    apply_budget(n_q * d * n_items * nprobe / n_lists, _PARALLEL_FROM)
    codes = index.codes.view(np.uint16) if kind == KIND_FLOAT16 else index.codes
    ivf_scan(
        q, items, codes, index.scales, index.ids, index.offsets, probes, kind,
        metric == "cosine", indptr, sorted_exclusions(indptr, indices), mask,
        short_s, short_i, out_ids, out_scores,
    )  # fmt: skip
    ids[:, :k_eff] = out_ids
    scores[:, :k_eff] = out_scores
    return ids, scores
