"""CUDA top-k (numba.cuda): the same contract and tie order as `kernels.topk`, on the GPU.

Stage 1 scores a chunk of items for every query on the device; stage 2 gives each (query,
segment) pair one thread with its own heap (the CPU kernels' sift-down, compiled for CUDA);
the host merges the segment heaps with the CPU merge kernel. Used by `topk` automatically when
a real CUDA device is visible; tests run it under NUMBA_ENABLE_CUDASIM=1.
"""

import math
import os
import weakref

import numpy as np

from kernels._heap import EMPTY_ID, _sift_down, merge_heaps

try:
    from numba import cuda
except ImportError:  # a Numba build without the CUDA target
    cuda = None

_THREADS = 128
# Items scored per device pass: bounds the [n_q, chunk] score buffer.
_SCORE_BUDGET = 1 << 26
# Items per segment heap in stage 2.
_SEGMENT = 4096


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def available() -> bool:
    """True when a CUDA device (or the CUDA simulator) can run the GPU kernels."""
    if cuda is None:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver must mean "no GPU", never a failed request
        return False


def use_gpu_by_default() -> bool:
    """`topk` takes the GPU path on its own only for a real device, never the simulator."""
    return available() and not simulated() and os.environ.get("REACHRANK_KERNELS_GPU") != "0"


if cuda is not None:
    _device_sift_down = cuda.jit(device=True)(_sift_down)

    @cuda.jit
    def _scores_kernel(queries, items, j0, m, cosine, out):
        j, q = cuda.grid(2)
        if j >= m or q >= queries.shape[0]:
            return
        s = np.float32(0.0)
        nn = np.float32(0.0)
        for t in range(queries.shape[1]):
            x = items[j0 + j, t]
            s += queries[q, t] * x
            nn += x * x
        if cosine:
            s = s / math.sqrt(nn) if nn > 0 else np.float32(0.0)
        out[q, j] = s

    @cuda.jit
    def _segments_kernel(scores, j0, m, indptr, ex, allowed, seg0, part_s, part_i):
        seg, q = cuda.grid(2)
        n_seg_chunk = (m + _SEGMENT - 1) // _SEGMENT
        if seg >= n_seg_chunk or q >= scores.shape[0]:
            return
        hs = part_s[q, seg0 + seg]
        hids = part_i[q, seg0 + seg]
        k = hs.shape[0]
        for r in range(k):
            hs[r] = -np.inf
            hids[r] = EMPTY_ID
        lo_ex = indptr[q]
        hi_ex = indptr[q + 1]
        for r in range(seg * _SEGMENT, min(m, (seg + 1) * _SEGMENT)):
            s = scores[q, r]
            j = j0 + r
            if not (s > hs[0] or (s == hs[0] and j < hids[0])):
                continue
            if allowed.shape[0] > 0 and allowed[j] == 0:
                continue
            a = lo_ex
            b = hi_ex
            while a < b:  # binary search in this query's sorted exclusions
                mid = (a + b) // 2
                if ex[mid] < j:
                    a = mid + 1
                else:
                    b = mid
            if a < hi_ex and ex[a] == j:
                continue
            _device_sift_down(hs, hids, k, s, j)


# Device copies of item matrices, keyed by the host array's identity (catalogues are immutable
# once loaded: update the array object, not its contents, to refresh the copy).
_device_items: dict[int, tuple[weakref.ref, object]] = {}


def _to_device(items: np.ndarray):
    entry = _device_items.get(id(items))
    if entry is not None and entry[0]() is items:
        return entry[1]
    dev = cuda.to_device(np.ascontiguousarray(items))
    _device_items[id(items)] = (weakref.ref(items), dev)
    return dev


def gpu_scan(q, items, k, cosine, indptr, ex_sorted, mask) -> tuple[np.ndarray, np.ndarray]:
    """Sorted top-k of prepared inputs (as `kernels.exact` prepares them), k <= n_items."""
    if not available():
        raise RuntimeError("no CUDA device visible: use kernels.topk (it falls back to the CPU)")
    n_q, n_items = q.shape[0], items.shape[0]
    chunk = max(_SEGMENT, (_SCORE_BUDGET // max(n_q, 1)) // _SEGMENT * _SEGMENT)
    n_seg = sum(-(-min(chunk, n_items - j0) // _SEGMENT) for j0 in range(0, n_items, chunk))
    d_items = _to_device(items)
    d_q = cuda.to_device(q)
    d_ptr = cuda.to_device(indptr)
    d_ex = cuda.to_device(ex_sorted if ex_sorted.size else np.zeros(1, dtype=np.int64))
    d_mask = cuda.to_device(mask)
    d_part_s = cuda.device_array((n_q, n_seg, k), dtype=np.float32)
    d_part_i = cuda.device_array((n_q, n_seg, k), dtype=np.int64)
    d_scores = cuda.device_array((n_q, min(chunk, n_items)), dtype=np.float32)
    seg0 = 0
    for j0 in range(0, n_items, chunk):
        m = min(chunk, n_items - j0)
        grid = (-(-m // _THREADS), n_q)
        _scores_kernel[grid, (_THREADS, 1)](d_q, d_items, j0, m, cosine, d_scores)
        segs = -(-m // _SEGMENT)
        grid = (-(-segs // 32), n_q)
        _segments_kernel[grid, (32, 1)](
            d_scores, j0, m, d_ptr, d_ex, d_mask, seg0, d_part_s, d_part_i
        )
        seg0 += segs
    # The CPU merge wants [task, query, k]; the device wrote [query, segment, k].
    part_s = np.ascontiguousarray(d_part_s.copy_to_host().transpose(1, 0, 2))
    part_i = np.ascontiguousarray(d_part_i.copy_to_host().transpose(1, 0, 2))
    ids = np.empty((n_q, k), dtype=np.int64)
    scores = np.empty((n_q, k), dtype=np.float32)
    merge_heaps(part_s, part_i, ids, scores)
    return ids, scores
