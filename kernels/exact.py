"""Exact top-k retrieval by inner product or cosine, with exclusions and masks inside the scan.

Two drivers: a streaming scan for a few queries (memory-bandwidth bound: each item row is read
once per query) and a blocked scan for batches (compute bound: cache-sized block products by
BLAS feed per-query heaps, each thread owning a slice of the catalogue).
"""

import numpy as np
from numba import njit, prange

from kernels import gpu
from kernels._dense import dense_topk
from kernels._heap import heap_init, merge_heaps
from kernels._scan import PREFILTER, block_scores, inv_norms, push_scores
from kernels.filters import Exclusions
from kernels.inputs import prepare_search
from kernels.threads import apply_budget, single_threaded_blas

# Below this many items per chunk, splitting one query's scan across threads costs more than it saves.
_MIN_CHUNK_ITEMS = 16384
# From this many queries on, one blocked pass beats a streaming pass per query (measured).
BLOCKED_MIN_QUERIES = 3
# A few queries over a catalogue of at most this many items, or of at most
# `_DENSE_ITEMS_PER_K` items per requested result, score everything and sort once (measured:
# `python -m bench.kernels --only dense`); past the size where the heap scan splits a query
# across threads, the heap scan stays (the dense scan is single-threaded).
_DENSE_MAX_ITEMS = 1024
_DENSE_ITEMS_PER_K = 16
# Multiply-adds (n_q * n_items * d) from which a scan is worth the thread pool's wake-up.
_PARALLEL_FROM = 1 << 21
# Queries per blocked pass and items per block product: the [queries, block] score tile
# (256 KiB) and the block (256 KiB) stay in L2.
_QUERY_GROUP = 64
_BLOCK_ITEMS = 1024


# Positions are item ids in the exact scans (a global: Numba freezes it as a constant).
_NO_IDMAP = np.empty(0, dtype=np.int64)


@njit(cache=True, parallel=True, nogil=True)
def _stream_scan(queries, items, cosine, indptr, ex_sorted, allowed, n_chunks, part_s, part_i):
    """Task (chunk c, query q) scans chunk c of the items for query q into heap part[c, q]."""
    n_q = queries.shape[0]
    n = items.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    for t in prange(n_q * n_chunks):
        q = t // n_chunks
        c = t % n_chunks
        hs = part_s[c, q]
        hids = part_i[c, q]
        heap_init(hs, hids)
        ex = ex_sorted[indptr[q] : indptr[q + 1]]
        buf = np.empty(PREFILTER, dtype=np.float32)
        for j0 in range(c * chunk, min(n, (c + 1) * chunk), PREFILTER):
            m = min(PREFILTER, n - j0, (c + 1) * chunk - j0)
            block_scores(queries[q], items, j0, m, cosine, buf)
            push_scores(buf, m, j0, _NO_IDMAP, ex, allowed, hs, hids)


@njit(cache=True, parallel=True, nogil=True)
def _blocked_scan(queries, items, cosine, indptr, ex_sorted, allowed, block, part_s, part_i):
    """Task c owns item chunk c: block products queries @ items[block].T feed its heaps part[c, :]."""
    n_tasks = part_s.shape[0]
    n_q = queries.shape[0]
    n = items.shape[0]
    chunk = (n + n_tasks - 1) // n_tasks
    for c in prange(n_tasks):
        for q in range(n_q):
            heap_init(part_s[c, q], part_i[c, q])
        tile = np.empty((n_q, block), dtype=np.float32)
        inv = np.empty(block, dtype=np.float32)
        hi = min(n, (c + 1) * chunk)
        for j0 in range(c * chunk, hi, block):
            m = min(block, hi - j0)
            if m == block:
                np.dot(queries, items[j0 : j0 + m].T, tile)
                scores = tile
            else:
                scores = np.dot(queries, items[j0 : j0 + m].T)
            if cosine:
                inv_norms(items, j0, m, inv)
                for q in range(n_q):
                    for r in range(m):
                        scores[q, r] *= inv[r]
            for q in range(n_q):
                ex = ex_sorted[indptr[q] : indptr[q + 1]]
                push_scores(scores[q], m, j0, _NO_IDMAP, ex, allowed, part_s[c, q], part_i[c, q])


def _scan(q, items, k, cosine, indptr, ex_sorted, mask, n_threads):
    """Sorted top-k of prepared inputs, k <= n_items."""
    n_q, n_items = q.shape[0], items.shape[0]
    if n_q < BLOCKED_MIN_QUERIES:
        n_chunks = max(1, min(-(-n_threads // n_q), n_items // _MIN_CHUNK_ITEMS))
        part_s = np.empty((n_chunks, n_q, k), dtype=np.float32)
        part_i = np.empty((n_chunks, n_q, k), dtype=np.int64)
        _stream_scan(q, items, cosine, indptr, ex_sorted, mask, n_chunks, part_s, part_i)
    else:
        n_tasks = max(1, min(n_threads, n_items // _BLOCK_ITEMS))
        part_s = np.empty((n_tasks, n_q, k), dtype=np.float32)
        part_i = np.empty((n_tasks, n_q, k), dtype=np.int64)
        with single_threaded_blas():
            _blocked_scan(q, items, cosine, indptr, ex_sorted, mask, _BLOCK_ITEMS, part_s, part_i)
    ids = np.empty((n_q, k), dtype=np.int64)
    scores = np.empty((n_q, k), dtype=np.float32)
    merge_heaps(part_s, part_i, ids, scores)
    return ids, scores


def uses_dense_scan(n_q: int, n_items: int, k: int) -> bool:
    """Whether a search of this shape scores every item and sorts once (`kernels._dense`)."""
    return n_q < BLOCKED_MIN_QUERIES and (
        n_items <= _DENSE_MAX_ITEMS or n_items <= min(_DENSE_ITEMS_PER_K * k, 2 * _MIN_CHUNK_ITEMS)
    )


def _cpu_topk(q, items, k, cosine, indptr, ex_sorted, mask) -> tuple[np.ndarray, np.ndarray]:
    """The CPU kernels over prepared inputs, in groups of `_QUERY_GROUP` queries."""
    n_q, n_items, d = q.shape[0], items.shape[0], q.shape[1]
    if uses_dense_scan(n_q, n_items, k):
        ids = np.empty((n_q, k), dtype=np.int64)
        scores = np.empty((n_q, k), dtype=np.float32)
        dense_topk(q, items, cosine, indptr, ex_sorted, mask, k, ids, scores)
        return ids, scores
    n_threads = apply_budget(n_q * n_items * d, _PARALLEL_FROM)
    ids = np.empty((n_q, k), dtype=np.int64)
    scores = np.empty((n_q, k), dtype=np.float32)
    for g0 in range(0, n_q, _QUERY_GROUP):
        g1 = min(n_q, g0 + _QUERY_GROUP)
        # Each group's exclusion offsets restart at 0 so the kernels index their own slice.
        sub_ptr = indptr[g0 : g1 + 1] - indptr[g0]
        sub_ex = ex_sorted[indptr[g0] : indptr[g1]]
        ids[g0:g1], scores[g0:g1] = _scan(
            q[g0:g1], items, k, cosine, sub_ptr, sub_ex, mask, n_threads
        )
    return ids, scores


def topk(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    metric: str = "ip",
    exclude: Exclusions | None = None,
    allowed: np.ndarray | None = None,
    device: str = "auto",
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
        device: "auto" (the GPU when a real CUDA device is visible and REACHRANK_KERNELS_GPU
            is not "0", else the CPU; a GPU failure falls back to the CPU and switches the GPU
            path off for the process), "cpu" or "gpu" (raises RuntimeError without a device).

    Returns:
        `(ids int64 [n_q, k], scores float32 [n_q, k])`, best first, ties broken by the lower id;
        id -1 with score -inf where fewer than k items qualify. Filters apply inside the scan,
        so k results come back whenever k items qualify. Items whose score is NaN never qualify.
    """
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    search = prepare_search(queries, items, k, metric, exclude, allowed)
    ids, scores = search.ids, search.scores
    if search.k == 0:
        return ids, scores
    q, indptr, ex_sorted, mask, k_eff = search[:5]
    n_q, n_items = q.shape[0], items.shape[0]
    cosine = metric == "cosine"
    rows = np.arange(n_q)
    gpu_fits = k_eff <= gpu.MAX_K and n_items < 1 << 32
    if device == "gpu" or (device == "auto" and gpu_fits and gpu.use_gpu_by_default()):
        try:
            ids[:, :k_eff], scores[:, :k_eff], rows = gpu.gpu_scan(
                q, items, k_eff, cosine, indptr, ex_sorted, mask
            )
        except Exception as exc:
            if device == "gpu":
                raise
            # A broken CUDA stack must cost one slow request, never a failed one.
            gpu.disable(f"{type(exc).__name__}: {exc}")
    if rows.size:  # the CPU's queries: all of them, or those the GPU left to it
        sub_q, sub_ptr, sub_ex = q, indptr, ex_sorted
        if rows.size < n_q:
            sub_q = np.ascontiguousarray(q[rows])
            parts = [ex_sorted[indptr[r] : indptr[r + 1]] for r in rows]
            sub_ptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
            sub_ex = np.concatenate(parts).astype(ex_sorted.dtype) if parts else ex_sorted[:0]
        cpu_ids, cpu_scores = _cpu_topk(sub_q, items, k_eff, cosine, sub_ptr, sub_ex, mask)
        ids[rows, :k_eff], scores[rows, :k_eff] = cpu_ids, cpu_scores
    return ids, scores
