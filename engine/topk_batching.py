"""Cross-request batching of retrieval top-k: concurrent Recommend calls searched in one pass.

One query scans the whole item table (memory-bound); a batch of queries reads it once and
scores them together (the blocked CPU scan, or one GPU launch), several times cheaper per
query (BENCHMARKS.md, Kernels). `TopKBatcher` is the dynamic batcher with a different
payload: each request is one `TopKQuery` (a row of the batch), and a batch runs one search per
group of queries that share the same allowed-item mask (exclusions are per query inside the
scan; k is the largest n asked, each request keeps its first n).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.batching import DynamicBatcher, _Pending
from kernels.filters import Exclusions

# search(queries [g, d], k, exclusions CSR, allowed mask or None) -> (ids [g, k], scores [g, k])
Search = Callable[[np.ndarray, int, Exclusions, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TopKQuery:
    """One request's search: its query vector, how many items, which rows to skip."""

    query: np.ndarray  # float32 [d]
    n: int
    exclude: np.ndarray  # int64 item rows
    allowed: np.ndarray | None = None  # bool [n_items]; None: every item


class TopKBatcher(DynamicBatcher):
    """Queues `TopKQuery`s; each future resolves to (item rows, scores) of that query, best
    first, without the -1 padding of a short answer."""

    def __init__(self, search: Search, **options: Any) -> None:
        super().__init__(_no_arrays, **options)
        self._search = search

    def _size(self, inputs: Any) -> int:
        return 1

    def _compute(self, live: list[_Pending]) -> None:
        groups: dict[int, list[_Pending]] = {}
        for p in live:
            mask = p.inputs.allowed
            groups.setdefault(0 if mask is None else id(mask), []).append(p)
        for members in groups.values():
            try:
                self._search_group(members)
            except Exception:
                if len(members) == 1:
                    raise
                # One bad query must not fail its neighbours: search each alone, so only the
                # culprit's caller gets the error.
                for p in members:
                    try:
                        self._search_group([p])
                    except Exception as exc:
                        p.set_exception(exc)

    def _search_group(self, members: list[_Pending]) -> None:
        queries = np.stack([p.inputs.query for p in members]).astype(np.float32, copy=False)
        k = max(p.inputs.n for p in members)
        lengths = [len(p.inputs.exclude) for p in members]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.concatenate([p.inputs.exclude for p in members]).astype(np.int64)
        ids, scores = self._search(queries, k, (indptr, indices), members[0].inputs.allowed)
        for i, p in enumerate(members):
            row_ids, row_scores = ids[i, : p.inputs.n], scores[i, : p.inputs.n]
            keep = row_ids >= 0
            p.set_result((row_ids[keep], row_scores[keep]))


def _no_arrays(inputs: Any) -> Any:
    raise AssertionError("TopKBatcher runs its own search")
