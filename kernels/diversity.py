"""Diversity re-ranking of a retrieved shortlist: maximal marginal relevance and per-category caps.

Both take the `(ids, scores)` a top-k call returned (best first, -1 padding) and return the
same shapes cut to k, so they slot between retrieval and the response.
"""

import numpy as np
from numba import njit, prange

from kernels._heap import EMPTY_ID
from kernels._scan import VEC
from kernels.inputs import check_items, empty_result
from kernels.threads import apply_budget

# Candidate x d multiply-adds per batch from which the thread pool pays off.
_PARALLEL_FROM = 1 << 20


def _check_shortlist(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(np.atleast_2d(ids), dtype=np.int64)
    scores = np.ascontiguousarray(np.atleast_2d(scores), dtype=np.float32)
    if ids.shape != scores.shape:
        raise ValueError("ids and scores must have the same shape")
    return ids, scores


@njit(cache=True, fastmath=VEC)
def _unit_rows(items, ids):
    out = np.zeros((ids.shape[0], items.shape[1]), dtype=np.float32)
    for r in range(ids.shape[0]):
        if ids[r] < 0:
            continue
        nn = np.float32(0.0)
        for t in range(items.shape[1]):
            nn += items[ids[r], t] * items[ids[r], t]
        if nn > 0:
            inv = np.float32(1.0) / np.sqrt(nn)
            for t in range(items.shape[1]):
                out[r, t] = items[ids[r], t] * inv
    return out


@njit(cache=True, fastmath=VEC)
def _cosine(a, b):
    s = np.float32(0.0)
    for t in range(a.shape[0]):
        s += a[t] * b[t]
    return s


@njit(cache=True, parallel=True)
def _mmr(items, ids, scores, lam, out_ids, out_scores):
    k = out_ids.shape[1]
    for q in prange(ids.shape[0]):
        cand = ids[q]
        vecs = _unit_rows(items, cand)
        m = cand.shape[0]
        max_sim = np.full(m, -np.inf, dtype=np.float32)
        taken = cand < 0  # padding is never selectable
        for step in range(k):
            best = -1
            best_v = -np.inf
            for r in range(m):
                if taken[r]:
                    continue
                penalty = max_sim[r] if step > 0 else np.float32(0.0)
                v = lam * scores[q, r] - (1 - lam) * penalty
                # Strict > keeps the earlier (more relevant) candidate on ties.
                if best < 0 or v > best_v:
                    best = r
                    best_v = v
            if best < 0:
                break
            taken[best] = True
            out_ids[q, step] = cand[best]
            out_scores[q, step] = scores[q, best]
            for r in range(m):
                if not taken[r]:
                    max_sim[r] = max(max_sim[r], _cosine(vecs[r], vecs[best]))


def mmr(
    ids: np.ndarray, scores: np.ndarray, items: np.ndarray, k: int, lam: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """Maximal marginal relevance: greedily pick k of each query's shortlist.

    Step by step, the next item maximises `lam * score - (1 - lam) * max cosine similarity` to
    the items already picked (item embeddings from `items`); ties go to the earlier candidate.
    `lam = 1` keeps the shortlist order. Returns `(ids, scores)` [n_q, k] in pick order with
    each item's original score; -1 / -inf pad queries with fewer than k valid candidates.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError("lam must be in [0, 1]")
    ids, scores = _check_shortlist(ids, scores)
    items = check_items(items)
    if ids.size and ids.max() >= items.shape[0]:
        raise IndexError("candidate id outside items")
    out_ids, out_scores = empty_result(ids.shape[0], k)
    if ids.shape[0] and k:
        apply_budget(ids.size * items.shape[1] * min(k, ids.shape[1]), _PARALLEL_FROM)
        _mmr(items, ids, scores, np.float32(lam), out_ids, out_scores)
    return out_ids, out_scores


@njit(cache=True, parallel=True)
def _cap(ids, scores, categories, cap, out_ids, out_scores):
    k = out_ids.shape[1]
    for q in prange(ids.shape[0]):
        # Categories seen so far and their counts: at most k distinct, so a linear search is fine.
        seen = np.full(k, EMPTY_ID, dtype=np.int64)
        counts = np.zeros(k, dtype=np.int64)
        n_seen = 0
        n_out = 0
        for r in range(ids.shape[1]):
            if n_out == k:
                break
            i = ids[q, r]
            if i < 0:
                continue
            c = categories[i]
            if c >= 0:
                slot = -1
                for s in range(n_seen):
                    if seen[s] == c:
                        slot = s
                        break
                if slot < 0:
                    slot = n_seen
                    seen[slot] = c
                    n_seen += 1
                if counts[slot] >= cap:
                    continue
                counts[slot] += 1
            out_ids[q, n_out] = i
            out_scores[q, n_out] = scores[q, r]
            n_out += 1


def cap_per_category(
    ids: np.ndarray, scores: np.ndarray, categories: np.ndarray, max_per_category: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the shortlist order but at most `max_per_category` items of any category, cut to k.

    `categories` is int64 [n_items], the category of each item; a negative category means
    uncategorised (never capped). Returns `(ids, scores)` [n_q, k], -1 / -inf padded.
    """
    if max_per_category < 1:
        raise ValueError("max_per_category must be >= 1")
    ids, scores = _check_shortlist(ids, scores)
    categories = np.ascontiguousarray(categories, dtype=np.int64)
    if ids.size and ids.max() >= categories.shape[0]:
        raise IndexError("candidate id outside categories")
    out_ids, out_scores = empty_result(ids.shape[0], k)
    if ids.shape[0] and k:
        apply_budget(ids.size * k, _PARALLEL_FROM)
        _cap(ids, scores, categories, max_per_category, out_ids, out_scores)
    return out_ids, out_scores
