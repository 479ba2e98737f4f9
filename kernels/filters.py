"""Per-query filters for the retrieval kernels: exclusion lists as CSR arrays, allowed-item masks."""

from collections.abc import Sequence

import numpy as np
from numba import njit

Exclusions = tuple[np.ndarray, np.ndarray]


def writable(a: np.ndarray) -> np.ndarray:
    """`a`, copied only when read-only: Numba compiles a separate kernel per read-only argument."""
    return a if a.flags.writeable else a.copy()


def exclusions_csr(lists: Sequence[Sequence[int] | np.ndarray]) -> Exclusions:
    """Pack one list of item rows per query into the CSR pair `topk(..., exclude=)` takes.

    Returns `(indptr int64 [len(lists) + 1], indices int64)`: query `q` excludes
    `indices[indptr[q]:indptr[q + 1]]`. Order and duplicates inside a list do not matter.
    """
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    if indptr[-1] == 0:
        return indptr, np.empty(0, dtype=np.int64)
    indices = np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in lists])
    return indptr, indices


def check_exclusions(exclude: Exclusions | None, n_queries: int) -> Exclusions:
    """Validate `exclude` for `n_queries` queries; None becomes an empty CSR pair."""
    if exclude is None:
        return np.zeros(n_queries + 1, dtype=np.int64), np.empty(0, dtype=np.int64)
    indptr, indices = exclude
    indptr = writable(np.ascontiguousarray(indptr, dtype=np.int64))
    indices = writable(np.ascontiguousarray(indices, dtype=np.int64))
    if indptr.shape != (n_queries + 1,):
        raise ValueError(f"exclude indptr must have n_queries + 1 = {n_queries + 1} entries")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError("exclude indptr must start at 0, never decrease and end at len(indices)")
    return indptr, indices


def check_allowed(allowed: np.ndarray | None, n_items: int) -> np.ndarray:
    """Validate an allowed-items mask as uint8 [n_items]; None becomes an empty (no-filter) mask."""
    if allowed is None:
        return np.empty(0, dtype=np.uint8)
    mask = np.asarray(allowed)
    if mask.shape != (n_items,):
        raise ValueError(f"allowed must be a mask of shape ({n_items},), got {mask.shape}")
    if mask.dtype not in (np.bool_, np.uint8):
        raise TypeError(f"allowed must be bool or uint8, got {mask.dtype}")
    return writable(np.ascontiguousarray(mask)).view(np.uint8)


@njit(cache=True)
def sorted_exclusions(indptr, indices):
    """A copy of `indices` with each query's slice sorted, for binary search during scans.

    Serial on purpose: the work is tiny, and every parallel region costs a thread-pool wake-up
    (milliseconds on a loaded machine), so each request gets exactly one, the scan.
    """
    out = indices.copy()
    for q in range(indptr.shape[0] - 1):
        out[indptr[q] : indptr[q + 1]].sort()
    return out
