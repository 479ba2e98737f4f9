"""Numba leaf kernels for exact scans: row scores and the filtered heap scan of one item range."""

import numpy as np
from numba import njit

from kernels._heap import sift_down

# reassoc + contract let LLVM vectorise the float32 reductions with FMA; unlike full fastmath
# they keep infinities meaningful, which the -inf heap sentinels rely on.
_VEC = {"reassoc", "contract"}


@njit(cache=True, fastmath=_VEC)
def dot_row(q, items, j):
    s = np.float32(0.0)
    for t in range(q.shape[0]):
        s += q[t] * items[j, t]
    return s


@njit(cache=True, fastmath=_VEC)
def cosine_row(q, items, j):
    """Cosine of a unit-norm query with item row j (0 for a zero row)."""
    s = np.float32(0.0)
    nn = np.float32(0.0)
    for t in range(q.shape[0]):
        x = items[j, t]
        s += q[t] * x
        nn += x * x
    if nn > 0:
        return s / np.sqrt(nn)
    return np.float32(0.0)


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
def scan_range(q, items, lo, hi, cosine, ex, allowed, hs, hids):
    """Push items [lo, hi) scored against q into the heap (hs, hids).

    Filters are checked only for items that would enter the heap, so exclusions and masks
    cost almost nothing on the hot path.
    """
    k = hs.shape[0]
    thr_s = hs[0]
    thr_i = hids[0]
    for j in range(lo, hi):
        s = cosine_row(q, items, j) if cosine else dot_row(q, items, j)
        if s > thr_s or (s == thr_s and j < thr_i):
            if is_filtered(j, ex, allowed):
                continue
            sift_down(hs, hids, k, s, j)
            thr_s = hs[0]
            thr_i = hids[0]
