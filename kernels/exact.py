"""Exact top-k retrieval by inner product or cosine, with exclusions and masks inside the scan."""

import numba
import numpy as np
from numba import njit, prange

from kernels._heap import heap_init, heap_push, heap_sort
from kernels._scan import scan_range
from kernels.filters import Exclusions, check_allowed, check_exclusions, writable

METRICS = ("ip", "cosine")
# Below this many items per chunk, splitting one query's scan across threads costs more than it saves.
_MIN_CHUNK_ITEMS = 16384


@njit(cache=True, parallel=True)
def _sorted_exclusions(indptr, indices):
    out = indices.copy()
    for q in prange(indptr.shape[0] - 1):
        out[indptr[q] : indptr[q + 1]].sort()
    return out


@njit(cache=True, parallel=True)
def _topk_scan(queries, items, cosine, indptr, ex_sorted, allowed, n_chunks, out_ids, out_scores):
    """Each (query, item chunk) task fills its own heap; heaps of a query are merged afterwards."""
    n_q = queries.shape[0]
    n = items.shape[0]
    k = out_ids.shape[1]
    part_s = np.empty((n_q, n_chunks, k), dtype=np.float32)
    part_i = np.empty((n_q, n_chunks, k), dtype=np.int64)
    chunk = (n + n_chunks - 1) // n_chunks
    for t in prange(n_q * n_chunks):
        q = t // n_chunks
        c = t % n_chunks
        lo = c * chunk
        hi = min(n, lo + chunk)
        hs = part_s[q, c]
        hids = part_i[q, c]
        heap_init(hs, hids)
        ex = ex_sorted[indptr[q] : indptr[q + 1]]
        scan_range(queries[q], items, lo, hi, cosine, ex, allowed, hs, hids)
    for q in prange(n_q):
        hs = out_scores[q]
        hids = out_ids[q]
        heap_init(hs, hids)
        for c in range(n_chunks):
            for j in range(k):
                heap_push(hs, hids, part_s[q, c, j], part_i[q, c, j])
        heap_sort(hs, hids)


def _as_queries(queries: np.ndarray, d: int) -> np.ndarray:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries must be [n, {d}] or [{d}], got shape {np.shape(queries)}")
    return writable(np.ascontiguousarray(q))


def check_items(items: np.ndarray) -> np.ndarray:
    """Items must already be float32, 2-D and C-contiguous: copying a catalogue per call is a bug."""
    if not isinstance(items, np.ndarray) or items.ndim != 2:
        raise ValueError("items must be a 2-D numpy array")
    if items.dtype != np.float32 or not items.flags.c_contiguous:
        raise TypeError("items must be C-contiguous float32 (convert once at load time)")
    return items


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)


def empty_result(n_q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n_q, k), -1, dtype=np.int64), np.full((n_q, k), -np.inf, dtype=np.float32)


def topk(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    metric: str = "ip",
    exclude: Exclusions | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k items for each query.

    Args:
        queries: float32 [n_q, d], or [d] for one query (the result is still [1, k]).
        items: float32 [n_items, d], C-contiguous (a read-only memmap is fine).
        k: results per query; may exceed n_items.
        metric: "ip" (inner product) or "cosine" (a zero vector scores 0 against everything).
        exclude: None or a CSR pair `(indptr int64 [n_q + 1], indices int64)` of item rows
            query q must skip (see `exclusions_csr`).
        allowed: None or a bool/uint8 mask [n_items]; only rows with a true entry qualify.

    Returns:
        `(ids int64 [n_q, k], scores float32 [n_q, k])`, best first, ties broken by the lower id;
        id -1 with score -inf where fewer than k items qualify. Filters apply inside the scan,
        so k results come back whenever k items qualify.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 0:
        raise ValueError("k must be >= 0")
    items = check_items(items)
    n_items, d = items.shape
    q = _as_queries(queries, d)
    n_q = q.shape[0]
    indptr, indices = check_exclusions(exclude, n_q)
    mask = check_allowed(allowed, n_items)
    ids, scores = empty_result(n_q, k)
    k_eff = min(k, n_items)
    if n_q == 0 or k_eff == 0:
        return ids, scores
    cosine = metric == "cosine"
    if cosine:
        q = normalize_rows(q)
    n_threads = numba.get_num_threads()
    n_chunks = max(1, min(-(-n_threads // n_q), n_items // _MIN_CHUNK_ITEMS))
    ex_sorted = _sorted_exclusions(indptr, indices)
    out_ids = np.empty((n_q, k_eff), dtype=np.int64)
    out_scores = np.empty((n_q, k_eff), dtype=np.float32)
    _topk_scan(q, items, cosine, indptr, ex_sorted, mask, n_chunks, out_ids, out_scores)
    ids[:, :k_eff] = out_ids
    scores[:, :k_eff] = out_scores
    return ids, scores
