"""Exact top-k by scoring every item and one stable sort: for small catalogues and large k.

A heap of k entries pays a sift per accepted score; when k is a large share of the catalogue
(Recommend asks for a few hundred candidates of a few thousand items) most scores are accepted,
and scoring all items, dropping the filtered ones and sorting once is several times cheaper than
the streaming heap scan, with no thread-pool wake-up. Same contract as the heap scans: best
first, ties broken by the lower id, NaN scores and filtered items never qualify, -1 / -inf
padding.
"""

import numpy as np
from numba import njit

from kernels._scan import block_scores


@njit(cache=True, nogil=True)
def dense_topk(queries, items, cosine, indptr, ex_sorted, allowed, k, out_ids, out_scores):
    """out[q, :k] = the k best qualifying items of query q (k <= n_items)."""
    n = items.shape[0]
    scores = np.empty(n, dtype=np.float32)
    keep = np.empty(n, dtype=np.bool_)
    cand = np.empty(n, dtype=np.int64)
    neg = np.empty(n, dtype=np.float32)
    for q in range(queries.shape[0]):
        block_scores(queries[q], items, 0, n, cosine, scores)
        for j in range(n):
            keep[j] = allowed.shape[0] == 0 or allowed[j] != 0
        for e in ex_sorted[indptr[q] : indptr[q + 1]]:
            if 0 <= e < n:
                keep[e] = False
        m = 0
        for j in range(n):
            s = scores[j]
            if keep[j] and s == s:  # s != s: NaN
                cand[m] = j
                neg[m] = -s
                m += 1
        t = min(k, m)
        if t < m:
            # Keep the t best: below the t-th smallest -score, then ties at it by lower id.
            threshold = np.partition(neg[:m], t - 1)[t - 1]
            below = 0
            for r in range(m):
                below += neg[r] < threshold
            ties = t - below
            kept = 0
            for r in range(m):
                if neg[r] < threshold or (neg[r] == threshold and ties > 0):
                    ties -= neg[r] == threshold
                    cand[kept] = cand[r]
                    neg[kept] = neg[r]
                    kept += 1
        # A stable sort of -score keeps ascending ids among equal scores (cand is ascending).
        order = np.argsort(neg[:t], kind="mergesort")
        for r in range(t):
            j = cand[order[r]]
            out_ids[q, r] = j
            out_scores[q, r] = scores[j]
        for r in range(t, k):
            out_ids[q, r] = -1
            out_scores[q, r] = -np.inf
