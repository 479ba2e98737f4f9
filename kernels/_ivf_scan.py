"""Numba kernels of the IVF search: list-blocked scoring of probed lists, then exact re-scoring.

Queries are grouped by the lists they probe; each thread owns a share of the lists, copies a
list's rows once (gathered float32 rows, or dequantised int8 / float16 codes) into a contiguous
buffer and scores it against all of its queries with one BLAS product, feeding per-query heaps.
"""

import numpy as np
from numba import njit, prange

from kernels._heap import heap_init, heap_push, heap_sort
from kernels._scan import VEC, inv_norms, push_scores

# float16 -> float32 without hardware support: shifting the 15 magnitude bits into float32's
# layout and multiplying by 2**112 rebiases the exponent, handling zeros and subnormals too.
_F16_SCALE = np.float32(2.0**112)
KIND_FLOAT32 = 0
KIND_INT8 = 1
KIND_FLOAT16 = 2
KIND_ORDERED = 3  # float32 rows already copied in list order: scored in place, exact


@njit(cache=True, inline="always")
def _half(h):
    v = np.uint32((h & np.uint32(0x7FFF)) << np.uint32(13)).view(np.float32) * _F16_SCALE
    return -v if h & np.uint32(0x8000) else v


@njit(cache=True)
def _fill_rows(items, codes, scales, ids, kind, p0, m, buf):
    """buf[:m] = float32 rows of list positions p0 .. p0 + m - 1."""
    d = buf.shape[1]
    for r in range(m):
        p = p0 + r
        if kind == KIND_FLOAT32:
            row = ids[p]
            for t in range(d):
                buf[r, t] = items[row, t]
        elif kind == KIND_INT8:
            s = scales[p]
            for t in range(d):
                buf[r, t] = np.float32(codes[p, t]) * s
        else:
            for t in range(d):
                buf[r, t] = _half(np.uint32(codes[p, t]))


@njit(cache=True)
def _longest(ptr):
    n = 0
    for i in range(ptr.shape[0] - 1):
        n = max(n, ptr[i + 1] - ptr[i])
    return n


@njit(cache=True, parallel=True, nogil=True)
def ivf_lists_scan(
    queries, items, ordered, codes, scales, ids, offsets, list_ptr, list_queries, kind, cosine,
    indptr, ex_sorted, allowed, part_s, part_i,
):  # fmt: skip
    """Task t scores lists t, t + n_tasks, ... against the queries probing them (list_ptr CSR).

    `ordered` (float32 rows in list order, KIND_ORDERED) is a separate argument from the int8 /
    float16 `codes` so every storage kind shares one compiled specialisation.
    """
    n_tasks = part_s.shape[0]
    n_lists = offsets.shape[0] - 1
    d = queries.shape[1]
    rows_max = _longest(offsets)
    queries_max = _longest(list_ptr)
    for t in prange(n_tasks):
        for q in range(queries.shape[0]):
            heap_init(part_s[t, q], part_i[t, q])
        buf = np.empty((rows_max, d), dtype=np.float32)
        qbuf = np.empty((queries_max, d), dtype=np.float32)
        inv = np.empty(rows_max, dtype=np.float32)
        for lst in range(t, n_lists, n_tasks):
            c = list_ptr[lst + 1] - list_ptr[lst]
            p0 = offsets[lst]
            m = offsets[lst + 1] - p0
            if c == 0 or m == 0:
                continue
            for i in range(c):
                qbuf[i] = queries[list_queries[list_ptr[lst] + i]]
            if kind == KIND_ORDERED:
                rows = ordered[p0 : p0 + m]
            else:
                # Gathered or dequantised into a contiguous buffer for the BLAS product.
                _fill_rows(items, codes, scales, ids, kind, p0, m, buf)
                rows = buf[:m]
            # rows @ queries.T, not the transpose: with few queries per list OpenBLAS runs this
            # orientation about twice as fast (measured at 4-16 queries x 977 rows x 64).
            scores = np.ascontiguousarray(np.dot(rows, qbuf[:c].T).T)
            if cosine:
                inv_norms(rows, 0, m, inv)
                for i in range(c):
                    for r in range(m):
                        scores[i, r] *= inv[r]
            for i in range(c):
                q = list_queries[list_ptr[lst] + i]
                ex = ex_sorted[indptr[q] : indptr[q + 1]]
                push_scores(scores[i], m, p0, ids, ex, allowed, part_s[t, q], part_i[t, q])


@njit(cache=True, fastmath=VEC)
def _exact_score(q, items, row, cosine):
    s = np.float32(0.0)
    nn = np.float32(0.0)
    for t in range(q.shape[0]):
        x = items[row, t]
        s += q[t] * x
        nn += x * x
    if cosine:
        return s / np.sqrt(nn) if nn > 0 else np.float32(0.0)
    return s


@njit(cache=True, parallel=True, nogil=True)
def rescore_shortlist(queries, items, shortlist, cosine, out_ids, out_scores):
    """Exact scores of each query's shortlist ids (-1 skipped); keep the best k, sorted."""
    for q in prange(queries.shape[0]):
        hs = out_scores[q]
        hids = out_ids[q]
        heap_init(hs, hids)
        for j in range(shortlist.shape[1]):
            i = shortlist[q, j]
            if i >= 0:
                heap_push(hs, hids, _exact_score(queries[q], items, i, cosine), i)
        heap_sort(hs, hids)
