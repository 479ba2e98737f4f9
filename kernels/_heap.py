"""Fixed-size top-k heaps in preallocated arrays, shared by every retrieval kernel.

A heap is a pair of 1-D arrays (scores float32 [k], ids int64 [k]) whose root holds the *worst*
kept entry. "Worse" means a lower score, or an equal score with a higher id, so every kernel
breaks ties by the lower id and answers are deterministic whatever the scan order.
"""

import numpy as np
from numba import njit

# Internal "empty slot" id: larger than any real id, so an empty slot loses every tie and a real
# item with a -inf score still beats it. Public results turn it into -1.
EMPTY_ID = np.iinfo(np.int64).max


@njit(cache=True, inline="always")
def worse(s1, i1, s2, i2):
    """True when entry (s1, i1) ranks below entry (s2, i2)."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@njit(cache=True, inline="always")
def heap_init(hs, hi):
    hs[:] = -np.inf
    hi[:] = EMPTY_ID


def _sift_down(hs, hi, size, s, i):
    """Place (s, i) at the root of the heap hs[:size] and restore the heap order.

    Self-contained (the `worse` test written out) so the GPU kernels compile the same source
    as a CUDA device function.
    """
    pos = 0
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        r = c + 1
        if r < size and (hs[r] < hs[c] or (hs[r] == hs[c] and hi[r] > hi[c])):
            c = r
        if hs[c] < s or (hs[c] == s and hi[c] > i):
            hs[pos] = hs[c]
            hi[pos] = hi[c]
            pos = c
        else:
            break
    hs[pos] = s
    hi[pos] = i


sift_down = njit(cache=True)(_sift_down)


@njit(cache=True, inline="always")
def heap_push(hs, hi, s, i):
    """Keep (s, i) if it beats the current worst entry; returns whether it was kept."""
    if worse(hs[0], hi[0], s, i):
        sift_down(hs, hi, hs.shape[0], s, i)
        return True
    return False


@njit(cache=True)
def heap_sort(hs, hi):
    """Sort a heap in place, best first; empty slots become id -1 with score -inf."""
    k = hs.shape[0]
    for end in range(k - 1, 0, -1):
        s = hs[end]
        i = hi[end]
        hs[end] = hs[0]
        hi[end] = hi[0]
        sift_down(hs, hi, end, s, i)
    for j in range(k):
        if hi[j] == EMPTY_ID:
            hi[j] = -1
            hs[j] = -np.inf


@njit(cache=True, nogil=True)
def merge_heaps(part_s, part_i, out_ids, out_scores):
    """Merge per-task heaps part[task, query] into sorted out[query].

    Serial on purpose: a few thousand pushes per query at most, cheaper than waking the pool.
    """
    for q in range(out_ids.shape[0]):
        hs = out_scores[q]
        hids = out_ids[q]
        heap_init(hs, hids)
        for t in range(part_s.shape[0]):
            for j in range(part_s.shape[2]):
                heap_push(hs, hids, part_s[t, q, j], part_i[t, q, j])
        heap_sort(hs, hids)
