"""Validation and preparation of retrieval inputs shared by the exact, IVF and re-rank entry points."""

from typing import NamedTuple

import numpy as np

from kernels.filters import (
    Exclusions,
    check_allowed,
    check_exclusions,
    sorted_exclusions,
    writable,
)

METRICS = ("ip", "cosine")


def prepare_queries(queries: np.ndarray, d: int, metric: str) -> np.ndarray:
    """Queries as writable C-contiguous float32 [n, d] (a 1-D query is one row), unit-norm for cosine."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries must be [n, {d}] or [{d}], got shape {np.shape(queries)}")
    if metric == "cosine":
        return normalize_rows(q)
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


class Search(NamedTuple):
    """Prepared inputs of one search, and its -1 / -inf padded outputs to fill.

    k is min(requested k, n_items), or 0 when there is nothing to search (no queries, no items,
    k = 0): the kernels fill ids[:, :k] and scores[:, :k].
    """

    q: np.ndarray
    indptr: np.ndarray
    ex_sorted: np.ndarray
    mask: np.ndarray
    k: int
    ids: np.ndarray
    scores: np.ndarray


def prepare_search(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    metric: str,
    exclude: Exclusions | None,
    allowed: np.ndarray | None,
) -> Search:
    """Validate a top-k call's arguments and convert them to the kernels' types."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if k < 0:
        raise ValueError("k must be >= 0")
    items = check_items(items)
    n_items, d = items.shape
    q = prepare_queries(queries, d, metric)
    indptr, indices = check_exclusions(exclude, q.shape[0])
    mask = check_allowed(allowed, n_items)
    ids, scores = empty_result(q.shape[0], k)
    k_eff = min(k, n_items) if q.shape[0] else 0
    return Search(q, indptr, sorted_exclusions(indptr, indices), mask, k_eff, ids, scores)
