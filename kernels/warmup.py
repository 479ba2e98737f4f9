"""Compile (or load from Numba's on-disk cache) every kernel before the first request."""

import time

import numpy as np

from kernels import gpu
from kernels.diversity import cap_per_category, mmr
from kernels.exact import _DENSE_MAX_ITEMS, BLOCKED_MIN_QUERIES, topk
from kernels.filters import exclusions_csr
from kernels.gather import gather_rows
from kernels.hashing import feature_buckets, hash_strings
from kernels.ivf import build_ivf, ivf_topk, quantize_ivf


def warmup() -> float:
    """Run each kernel once on tiny inputs of every dtype/layout the service uses.

    Covers top-k (both metrics, filters, single-query and batch drivers, writable and read-only
    items such as memmaps), IVF search (float32, int8 and float16 storage; in-memory index), MMR, category caps,
    hashing and gathers of float32 / int64 tables. With a warm
    `NUMBA_CACHE_DIR` this takes well under a second; cold, it compiles everything (tens of
    seconds). Returns the seconds it took (the engine reports it as part of time-to-ready).
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    items = rng.standard_normal((64, 8)).astype(np.float32)
    frozen = items.copy()
    frozen.setflags(write=False)
    queries = rng.standard_normal((BLOCKED_MIN_QUERIES, 8)).astype(np.float32)
    mask = np.ones(64, dtype=bool)
    # Past the dense scan's size a single query streams through the heap scan.
    wide = rng.standard_normal((_DENSE_MAX_ITEMS + 1, 8)).astype(np.float32)
    wide_frozen = wide.copy()
    wide_frozen.setflags(write=False)
    for table, big in ((items, wide), (frozen, wide_frozen)):
        for metric in ("ip", "cosine"):
            for catalogue in (table, big):
                topk(
                    queries[0],
                    catalogue,
                    5,
                    metric=metric,
                    exclude=exclusions_csr([[1, 2]]),
                    allowed=np.ones(len(catalogue), dtype=bool),
                )
            topk(queries, table, 5, metric=metric)
        gather_rows(table, np.array([0, -1, 3], dtype=np.int64))
        index = build_ivf(items, 4, seed=0, n_iter=2)
        for stored in (
            index,
            quantize_ivf(items, index, "int8"),
            quantize_ivf(items, index, "float16"),
        ):
            ivf_topk(queries, table, stored, 5, nprobe=2, exclude=None, allowed=mask)
    ids, scores = topk(queries, items, 6)
    if gpu.use_gpu_by_default():  # the batch score kernel too (1 and 3 queries took the others)
        topk(rng.standard_normal((gpu._WIDE_FROM, 8)).astype(np.float32), items, 5)
    mmr(ids, scores, items, 3)
    mmr(ids, scores, frozen, 3)
    cap_per_category(ids, scores, np.arange(64, dtype=np.int64) % 3, 1, 3)
    gather_rows(np.arange(12, dtype=np.int64).reshape(4, 3), np.array([1, -1], dtype=np.int64))
    for dtype in (np.float32, np.int64):  # gathers big enough for the thread pool
        big = np.zeros((4, 1 << 15), dtype=dtype)
        gather_rows(big, np.zeros(8, dtype=np.int64))
        big.setflags(write=False)  # memory-mapped tables are read-only
        gather_rows(big, np.zeros(8, dtype=np.int64))
    hash_strings(["warm", "up"])
    feature_buckets("warmup", ["a", None], 16)
    return time.perf_counter() - t0
