"""IVF approximate retrieval: a k-means coarse quantiser, inverted lists, optional int8/float16 codes.

The index is a handful of plain arrays (`IVFIndex`) the trainer saves as `.npy` files in the
model bundle (`save_ivf` / `load_ivf`, no pickle) and the engine loads.

Recall depends on the data as much as on the index. Documented levels, asserted in
tests/kernels/test_kernels_ivf.py: recall@10 >= 0.85 (ip) / 0.93 (cosine) with 64 lists and
nprobe 8 on 20k x 32 clustered items. Measured on the 1M x 64 benchmark catalogue with 1,024
lists: recall@100 0.899 / 0.949 / 0.964 / 0.988 at nprobe 16 / 24 / 32 / 64 (BENCHMARKS.md).
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from kernels._heap import merge_heaps
from kernels._ivf_scan import (
    KIND_FLOAT16,
    KIND_FLOAT32,
    KIND_INT8,
    KIND_ORDERED,
    ivf_lists_scan,
    rescore_shortlist,
)
from kernels.filters import Exclusions
from kernels.inputs import METRICS, check_items, normalize_rows, prepare_search
from kernels.kmeans import kmeans, nearest_centroid
from kernels.threads import apply_budget, single_threaded_blas

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
    codes: item rows in position (list) order, [0, d] int8 if none: float32 (an exact copy that
        is scanned in place, fastest), or int8 / float16 (compressed, re-scored exactly).
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
    """The index plus a copy of the item rows in list order: "float32", "int8" or "float16".

    float32 is an exact copy (scanned in place: no gather, no re-scoring; twice the memory).
    int8 uses a symmetric per-row scale (max |x| / 127). With int8 / float16, searches scan the
    codes and re-score a shortlist exactly from `items`, which may stay on disk as a memmap.
    """
    rows = items[index.ids]
    if dtype == "float32":
        return index._replace(codes=np.ascontiguousarray(rows), scales=np.empty(0, np.float32))
    if dtype == "float16":
        return index._replace(codes=rows.astype(np.float16), scales=np.empty(0, np.float32))
    if dtype != "int8":
        raise ValueError("dtype must be 'float32', 'int8' or 'float16'")
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
    return {np.dtype(np.float32): KIND_ORDERED, np.dtype(np.int8): KIND_INT8}.get(
        index.codes.dtype, KIND_FLOAT16
    )


def _probed_by_list(
    q: np.ndarray, centroids: np.ndarray, nprobe: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each list, the queries that probe it (as a CSR pair `list_ptr`, `list_queries`).

    A query probes the nprobe lists with the highest query-centroid inner product.
    """
    n_q, n_lists = q.shape[0], centroids.shape[0]
    if nprobe >= n_lists:
        probes = np.broadcast_to(np.arange(n_lists), (n_q, n_lists))
    else:
        probes = np.argpartition(-(q @ centroids.T), nprobe - 1, axis=1)[:, :nprobe]
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")
    list_ptr = np.zeros(n_lists + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n_lists), out=list_ptr[1:])
    list_queries = (order // probes.shape[1]).astype(np.int64)
    return list_ptr, list_queries


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
    rescore: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k: scan the `nprobe` lists nearest each query; same contract as `topk`.

    Returned scores are exact (float32 rows of `items`). With compressed codes in the index,
    the lists are scanned on the codes, the best `rescore * k` kept and re-scored exactly (on
    the 1M x 64 benchmark catalogue, rescore=2 already returned exactly the float32 answer for
    both int8 and float16; rescore=1 lost 0.9% of it with int8).
    `nprobe = n_lists` gives the exact answer (float32 scan). Filters apply inside the scan.
    """
    if nprobe < 1 or rescore < 1:
        raise ValueError("nprobe and rescore must be >= 1")
    search = prepare_search(queries, items, k, metric, exclude, allowed)
    ids, scores = search.ids, search.scores
    n_items, d = items.shape
    if index.ids.shape[0] != n_items or index.centroids.shape[1] != d:
        raise ValueError("index was built for a different item matrix")
    kind = _kind(index, n_items)
    if search.k == 0:
        return ids, scores
    q, k_eff = search.q, search.k
    n_q = q.shape[0]
    n_lists = index.centroids.shape[0]
    exact_scan = kind in (KIND_FLOAT32, KIND_ORDERED)
    k_short = k_eff if exact_scan else min(n_items, rescore * k_eff)
    n_threads = apply_budget(n_q * d * n_items * min(nprobe, n_lists) / n_lists, _PARALLEL_FROM)
    part_s = np.empty((n_threads, n_q, k_short), dtype=np.float32)
    part_i = np.empty((n_threads, n_q, k_short), dtype=np.int64)
    no_rows = np.empty((0, d), dtype=np.float32)
    no_codes = np.empty((0, d), dtype=np.int8)
    ordered = index.codes if kind == KIND_ORDERED else no_rows
    # Viewed only when float16: an eager view fails for other code dtypes of odd width.
    if kind == KIND_FLOAT16:
        codes = index.codes.view(np.uint16)
    else:
        codes = index.codes if kind == KIND_INT8 else no_codes
    with single_threaded_blas():
        # The probe product too: BLAS threads waking next to Numba's cost milliseconds.
        list_ptr, list_queries = _probed_by_list(
            q, np.asarray(index.centroids), min(nprobe, n_lists)
        )
        ivf_lists_scan(
            q, items, ordered, codes, index.scales, index.ids, index.offsets, list_ptr, list_queries,
            kind, metric == "cosine", search.indptr, search.ex_sorted, search.mask,
            part_s, part_i,
        )  # fmt: skip
    short_i = np.empty((n_q, k_short), dtype=np.int64)
    short_s = np.empty((n_q, k_short), dtype=np.float32)
    merge_heaps(part_s, part_i, short_i, short_s)
    if exact_scan:
        out_ids, out_scores = short_i, short_s
    else:
        out_ids = np.empty((n_q, k_eff), dtype=np.int64)
        out_scores = np.empty((n_q, k_eff), dtype=np.float32)
        rescore_shortlist(q, items, short_i, metric == "cosine", out_ids, out_scores)
    ids[:, :k_eff] = out_ids
    scores[:, :k_eff] = out_scores
    return ids, scores
