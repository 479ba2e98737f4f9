"""Numba kernels of the IVF search: scoring probed lists (float32 by id, or int8 / float16 codes)."""

import numpy as np
from numba import njit, prange

from kernels._heap import heap_init, heap_push, heap_sort
from kernels._scan import PREFILTER, VEC, push_scores

# float16 -> float32 without hardware support: shifting the 15 magnitude bits into float32's
# layout and multiplying by 2**112 rebiases the exponent, handling zeros and subnormals too.
_F16_SCALE = np.float32(2.0**112)
KIND_FLOAT32 = 0
KIND_INT8 = 1
KIND_FLOAT16 = 2


@njit(cache=True, inline="always")
def _half(h):
    v = np.uint32((h & np.uint32(0x7FFF)) << np.uint32(13)).view(np.float32) * _F16_SCALE
    return -v if h & np.uint32(0x8000) else v


@njit(cache=True, fastmath=VEC)
def _list_scores(q, items, codes, scales, ids, kind, p0, m, cosine, out):
    """out[r] = score of list position p0 + r: from items[ids[p]] or from the codes at p."""
    d = q.shape[0]
    for r in range(m):
        p = p0 + r
        s = np.float32(0.0)
        nn = np.float32(0.0)
        if kind == KIND_FLOAT32:
            row = ids[p]
            for t in range(d):
                x = items[row, t]
                s += q[t] * x
                nn += x * x
        elif kind == KIND_INT8:
            for t in range(d):
                x = np.float32(codes[p, t])
                s += q[t] * x
                nn += x * x
            if not cosine:
                s *= scales[p]
        else:
            for t in range(d):
                x = _half(np.uint32(codes[p, t]))
                s += q[t] * x
                nn += x * x
        if cosine:
            s = s / np.sqrt(nn) if nn > 0 else np.float32(0.0)
        out[r] = s


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


@njit(cache=True, parallel=True)
def ivf_scan(
    queries, items, codes, scales, ids, offsets, probes, kind, cosine,
    indptr, ex_sorted, allowed, short_s, short_i, out_ids, out_scores,
):  # fmt: skip
    """Per query: scan its probed lists into a shortlist heap, then (codes only) re-score exactly.

    With float32 scoring the shortlist is the answer; with codes its entries are re-scored from
    `items` and the best k kept, so the returned scores are always exact.
    """
    k = out_ids.shape[1]
    for q in prange(queries.shape[0]):
        hs = short_s[q]
        hids = short_i[q]
        heap_init(hs, hids)
        ex = ex_sorted[indptr[q] : indptr[q + 1]]
        buf = np.empty(PREFILTER, dtype=np.float32)
        for li in range(probes.shape[1]):
            lst = probes[q, li]
            for p0 in range(offsets[lst], offsets[lst + 1], PREFILTER):
                m = min(PREFILTER, offsets[lst + 1] - p0)
                _list_scores(queries[q], items, codes, scales, ids, kind, p0, m, cosine, buf)
                push_scores(buf, m, p0, ids, ex, allowed, hs, hids)
        os_ = out_scores[q]
        oi = out_ids[q]
        if kind == KIND_FLOAT32:
            heap_sort(hs, hids)
            os_[:] = hs[:k]
            oi[:] = hids[:k]
            continue
        heap_init(os_, oi)
        for j in range(hs.shape[0]):
            if hids[j] >= 0 and hids[j] < items.shape[0]:
                heap_push(os_, oi, _exact_score(queries[q], items, hids[j], cosine), hids[j])
        heap_sort(os_, oi)
