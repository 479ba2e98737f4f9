"""Numba leaf kernels for exact scans: block scores and the filtered push of scores into a heap."""

import numpy as np
from numba import njit

from kernels._heap import sift_down

# reassoc + contract let LLVM vectorise the float32 reductions with FMA; unlike full fastmath
# they keep infinities meaningful, which the -inf heap sentinels rely on.
VEC = {"reassoc", "contract"}
# Scores are tested against the heap threshold this many at a time with one vectorised pass,
# so the scalar heap logic only runs on the rare stretches that hold a candidate.
PREFILTER = 64


@njit(cache=True, fastmath=VEC)
def block_scores(q, items, j0, m, cosine, out):
    """out[r] = score of item j0 + r for r < m; cosine assumes a unit-norm q (zero rows score 0).

    Scoring a short block of rows before touching the heap keeps many independent dot products
    in flight, which is what lets one query run at memory bandwidth.
    """
    d = q.shape[0]
    for r in range(m):
        s = np.float32(0.0)
        if cosine:
            nn = np.float32(0.0)
            for t in range(d):
                x = items[j0 + r, t]
                s += q[t] * x
                nn += x * x
            s = s / np.sqrt(nn) if nn > 0 else np.float32(0.0)
        else:
            for t in range(d):
                s += q[t] * items[j0 + r, t]
        out[r] = s


@njit(cache=True)
def inv_norms(items, j0, m, out):
    """out[r] = 1 / ||items[j0 + r]||, or 0 for a zero row (its cosine is then 0)."""
    for r in range(m):
        nn = np.float32(0.0)
        for t in range(items.shape[1]):
            nn += items[j0 + r, t] * items[j0 + r, t]
        out[r] = np.float32(1.0) / np.sqrt(nn) if nn > 0 else np.float32(0.0)


@njit(cache=True, inline="always")
def is_filtered(j, ex, allowed):
    """True when item j is outside the allowed mask or in the sorted exclusion list `ex`."""
    if allowed.shape[0] > 0 and allowed[j] == 0:
        return True
    if ex.shape[0] > 0:
        p = np.searchsorted(ex, j)
        if p < ex.shape[0] and ex[p] == j:
            return True
    return False


@njit(cache=True)
def _count_at_least(scores, lo, hi, thr):
    # An integer count vectorises (AVX2 compares + adds); a boolean OR did not, and cost 3x.
    c = 0
    for j in range(lo, hi):
        c += scores[j] >= thr
    return c


@njit(cache=True)
def push_scores(scores, m, j0, idmap, ex, allowed, hs, hids):
    """Offer positions j0 .. j0 + m - 1 with scores[:m] to the heap (hs, hids).

    A position is an item id itself when `idmap` is empty, else the item id is idmap[position]
    (IVF lists store their items in list order). Once the heap is full almost no score beats
    its threshold, so whole rows, then PREFILTER-sized stretches, are first tested with one
    vectorised count; filters are checked only for items that would enter the heap.
    """
    k = hs.shape[0]
    if _count_at_least(scores, 0, m, hs[0]) == 0:
        return
    for c0 in range(0, m, PREFILTER):
        c1 = min(m, c0 + PREFILTER)
        thr_s = hs[0]
        if m > PREFILTER and _count_at_least(scores, c0, c1, thr_s) == 0:
            continue
        thr_i = hids[0]
        for r in range(c0, c1):
            s = scores[r]
            j = j0 + r if idmap.shape[0] == 0 else idmap[j0 + r]
            if s > thr_s or (s == thr_s and j < thr_i):
                if is_filtered(j, ex, allowed):
                    continue
                sift_down(hs, hids, k, s, j)
                thr_s = hs[0]
                thr_i = hids[0]
