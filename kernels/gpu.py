"""CUDA top-k (numba.cuda): the same contract and tie order as `kernels.topk`, on the GPU.

A radix select, as GPU top-k libraries do it, in two kernels per group of queries:

1. `_keys_kernel_gemv` (up to 4 queries), `_keys_kernel` or `_keys_kernel_wide` (batches of
   32 and more): a matrix-vector or shared-memory tiled product scores every (query, item) pair and stores it as an order-preserving uint32 key (key 0 = "never
   qualifies": NaN, not allowed, excluded by `_exclude_kernel`);
2. `_select_kernel`, one block per query: up to three rounds of 11/11/10 bits count the keys
   under the current prefix in a shared-memory histogram and find the bin of the k-th key,
   stopping as soon as everything from that bin up fits the candidate buffer (`_CAP`); those
   keys are compacted into shared memory with their ids, bitonic-sorted by (score desc, id
   asc), and the first k written out.

Only queries and the [n_q, k] answers cross the bus; the catalogue is copied to the device once
(and its norms for cosine). A query whose k-th score is shared by more than `_CAP` items
(degenerate ties) is answered by the CPU kernels, so answers are exact in every case.
Used by `topk` automatically when a real CUDA device is visible; tests run it under
NUMBA_ENABLE_CUDASIM=1, and `python -m bench.gpu` checks and times it on a real GPU.
"""

import logging
import os
import threading
import time
import weakref

import numpy as np

try:
    from numba import cuda
except ImportError:  # a Numba build without the CUDA target
    cuda = None

log = logging.getLogger(__name__)

# Candidate buffer per query (a power of two; shared memory of the sort: 8 bytes each). k must
# be at most half of it, so a bin boundary never forces a refinement for k alone.
_CAP = 4096
MAX_K = _CAP // 2
_SELECT_THREADS = 1024
# Keys kept on the device per group of queries (uint32 each): 1 GiB.
_KEY_BUDGET = 1 << 28
# The product's tile: _TILE_ITEMS items x _TILE_QUERIES queries per block, _TILE_DIMS at a time.
_TILE_ITEMS = 64
_TILE_QUERIES = 16
_TILE_DIMS = 32
_TILE_STRIDE = _TILE_DIMS + 1  # padded shared rows: no bank conflicts down a column
_Q_PER_THREAD = 4  # each of 64 x 4 threads computes one item for 4 queries
# Up to this many queries (and dimensions), a matrix-vector kernel: one thread per item.
_GEMV_MAX = 4
_GEMV_DIMS = 256
# From this many queries on, a wider tile: 64 items x 64 queries, 16 x 16 threads each holding
# a 4 x 4 block of scores in registers (fewer shared-memory reads per multiply-add).
_WIDE_FROM = 32
_W_TILE = 64
_W_DIMS = 16
_W_STRIDE = _W_TILE + 1
_HIST_BINS = 2048

# Set to a dict to accumulate milliseconds per stage (synchronising after each: slower).
stage_ms: dict[str, float] | None = None

# Why the GPU path was switched off after a failure (None while it works or was never tried).
_broken: str | None = None


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
    return (
        _broken is None
        and available()
        and not simulated()
        and os.environ.get("REACHRANK_KERNELS_GPU") != "0"
    )


def disable(reason: str) -> None:
    """Switch the automatic GPU path off for this process (a kernel failed to compile or run:
    e.g. a numba-cuda release that does not support the installed NumPy). Logged once."""
    global _broken
    if _broken is None:
        log.warning("GPU top-k disabled, the CPU kernels serve from now on: %s", reason)
    _broken = reason


def broken() -> str | None:
    return _broken


def to_keys(scores: np.ndarray) -> np.ndarray:
    """NumPy reference of the kernels' key: uint32 in score order (-0.0 equal to 0.0), 0 for NaN."""
    bits = np.ascontiguousarray(scores, dtype=np.float32).view(np.uint32)
    bits = np.where(bits == 0x80000000, np.uint32(0), bits)
    keys = np.where(bits & 0x80000000, ~bits, bits | 0x80000000).astype(np.uint32)
    keys[np.isnan(scores)] = 0
    return keys


def from_keys(keys: np.ndarray) -> np.ndarray:
    """Scores back from keys (key 0 gives -inf, the padding of a short answer)."""
    keys = np.asarray(keys, dtype=np.uint32)
    bits = np.where(keys & 0x80000000, keys & 0x7FFFFFFF, ~keys).astype(np.uint32)
    scores = bits.view(np.float32).copy()
    scores[keys == 0] = -np.inf
    return scores


_U32 = 0xFFFFFFFF

if cuda is not None:
    from numba import float32, int32, int64, uint32, uint64

    if simulated():

        def _key(s):  # the simulator runs kernels as Python: reinterpret through NumPy
            if s != s:
                return np.uint32(0)
            b = int(np.float32(s).view(np.uint32))
            if b == 0x80000000:  # -0.0 ties with 0.0, as on the CPU
                b = 0
            return np.uint32((~b & _U32) if b & 0x80000000 else (b | 0x80000000))

    else:

        @cuda.jit(device=True, inline=True)
        def _key(s):
            """Order-preserving uint32 of a float32 score; 0 for NaN (never qualifies)."""
            if s != s:
                return uint32(0)
            b = uint32(cuda.libdevice.float_as_int(s))
            if b == uint32(0x80000000):  # -0.0 ties with 0.0, as on the CPU
                b = uint32(0)
            if b & uint32(0x80000000):
                return uint32(~b & _U32)
            return uint32(b | uint32(0x80000000))

    @cuda.jit(cache=True)
    def _keys_kernel(queries, items, inv_norm, cosine, allowed, keys):
        """keys[q, j] for a tile of 64 items x 16 queries; threads (64, 4), each computes one
        item for 4 queries from shared-memory tiles of 32 dimensions."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * _TILE_ITEMS + tx
        i0 = cuda.blockIdx.x * _TILE_ITEMS
        q0 = cuda.blockIdx.y * _TILE_QUERIES
        n = items.shape[0]
        n_q = queries.shape[0]
        d = items.shape[1]
        s_items = cuda.shared.array((_TILE_ITEMS, _TILE_STRIDE), float32)
        s_q = cuda.shared.array((_TILE_QUERIES, _TILE_DIMS), float32)
        acc = cuda.local.array(_Q_PER_THREAD, float32)
        for r in range(_Q_PER_THREAD):
            acc[r] = float32(0.0)
        for t0 in range(0, d, _TILE_DIMS):
            # Coalesced loads: consecutive threads read consecutive dimensions of a row.
            for e in range(tid, _TILE_ITEMS * _TILE_DIMS, _TILE_ITEMS * 4):
                row = e // _TILE_DIMS
                col = e % _TILE_DIMS
                ok = i0 + row < n and t0 + col < d
                s_items[row, col] = items[i0 + row, t0 + col] if ok else float32(0.0)
            for e in range(tid, _TILE_QUERIES * _TILE_DIMS, _TILE_ITEMS * 4):
                row = e // _TILE_DIMS
                col = e % _TILE_DIMS
                ok = q0 + row < n_q and t0 + col < d
                s_q[row, col] = queries[q0 + row, t0 + col] if ok else float32(0.0)
            cuda.syncthreads()
            if q0 + ty * _Q_PER_THREAD < n_q:  # the same for a whole warp: no divergence
                for c in range(_TILE_DIMS):
                    x = s_items[tx, c]
                    for r in range(_Q_PER_THREAD):
                        acc[r] += s_q[ty * _Q_PER_THREAD + r, c] * x
            cuda.syncthreads()
        j = i0 + tx
        if j >= n:
            return
        ok = allowed.shape[0] == 0 or allowed[j] != 0
        for r in range(_Q_PER_THREAD):
            q = q0 + ty * _Q_PER_THREAD + r
            if q < n_q:
                s = acc[r] * inv_norm[j] if cosine else acc[r]
                keys[q, j] = _key(s) if ok else uint32(0)

    @cuda.jit(cache=True)
    def _keys_kernel_gemv(queries, items, inv_norm, cosine, allowed, keys):
        """keys[q, j] for up to _GEMV_MAX queries: one thread per item walks its row (the
        queries sit in shared memory), so the catalogue is read once, as a matrix-vector
        product should."""
        s_q = cuda.shared.array((_GEMV_MAX, _GEMV_DIMS), float32)
        n_q = queries.shape[0]
        d = items.shape[1]
        for e in range(cuda.threadIdx.x, _GEMV_MAX * _GEMV_DIMS, cuda.blockDim.x):
            r = e // _GEMV_DIMS
            c = e % _GEMV_DIMS
            s_q[r, c] = queries[r, c] if r < n_q and c < d else float32(0.0)
        cuda.syncthreads()
        j = cuda.grid(1)
        if j >= items.shape[0]:
            return
        acc = cuda.local.array(_GEMV_MAX, float32)
        for r in range(_GEMV_MAX):
            acc[r] = float32(0.0)
        for c in range(d):
            x = items[j, c]
            for r in range(_GEMV_MAX):
                acc[r] += s_q[r, c] * x
        ok = allowed.shape[0] == 0 or allowed[j] != 0
        for r in range(n_q):
            s = acc[r] * inv_norm[j] if cosine else acc[r]
            keys[r, j] = _key(s) if ok else uint32(0)

    @cuda.jit(cache=True)
    def _keys_kernel_wide(queries, items, inv_norm, cosine, allowed, keys):
        """keys[q, j] for a tile of 64 items x 64 queries; threads (16, 16), thread (tx, ty)
        computes items tx + 16a and queries ty + 16b (a, b < 4) from 16-dimension slices."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * 16 + tx
        i0 = cuda.blockIdx.x * _W_TILE
        q0 = cuda.blockIdx.y * _W_TILE
        n = items.shape[0]
        n_q = queries.shape[0]
        d = items.shape[1]
        s_i = cuda.shared.array((_W_DIMS, _W_STRIDE), float32)
        s_q = cuda.shared.array((_W_DIMS, _W_STRIDE), float32)
        acc = cuda.local.array((4, 4), float32)
        x = cuda.local.array(4, float32)
        y = cuda.local.array(4, float32)
        for a in range(4):
            for b in range(4):
                acc[a, b] = float32(0.0)
        for t0 in range(0, d, _W_DIMS):
            for e in range(tid, _W_TILE * _W_DIMS, 256):
                row = e // _W_DIMS
                col = e % _W_DIMS
                ok = i0 + row < n and t0 + col < d
                s_i[col, row] = items[i0 + row, t0 + col] if ok else float32(0.0)
                ok = q0 + row < n_q and t0 + col < d
                s_q[col, row] = queries[q0 + row, t0 + col] if ok else float32(0.0)
            cuda.syncthreads()
            for c in range(_W_DIMS):
                for a in range(4):
                    x[a] = s_i[c, tx + 16 * a]
                    y[a] = s_q[c, ty + 16 * a]
                for a in range(4):
                    for b in range(4):
                        acc[a, b] += x[a] * y[b]
            cuda.syncthreads()
        for a in range(4):
            j = i0 + tx + 16 * a
            if j < n:
                ok = allowed.shape[0] == 0 or allowed[j] != 0
                for b in range(4):
                    q = q0 + ty + 16 * b
                    if q < n_q:
                        s = acc[a, b] * inv_norm[j] if cosine else acc[a, b]
                        keys[q, j] = _key(s) if ok else uint32(0)

    @cuda.jit(cache=True)
    def _exclude_kernel(indptr, ex, keys):
        """Key 0 for each query's excluded items (a scatter over the CSR exclusions)."""
        i = cuda.grid(1)
        if i >= ex.shape[0]:
            return
        lo = 0
        hi = indptr.shape[0] - 1
        while hi - lo > 1:  # the query whose slice holds entry i: indptr[lo] <= i < indptr[hi]
            mid = (lo + hi) // 2
            if indptr[mid] <= i:
                lo = mid
            else:
                hi = mid
        keys[lo, ex[i]] = uint32(0)

    @cuda.jit(device=True, inline=True)
    def _round(r):
        """(shift, bins) of radix round r: 11, 11 and 10 bits from the top."""
        if r == 0:
            return 21, 2048
        if r == 1:
            return 10, 2048
        return 0, 1024

    @cuda.jit(cache=True)
    def _select_kernel(keys, k, out_keys, out_ids, overflow):
        """One block per query: radix rounds over its keys (histogram in shared memory, the
        bin of the k-th key found by one thread), stop as soon as every key from that bin up
        fits the candidate buffer, compact them into shared memory, bitonic-sort them
        (key desc, id asc: the packed value desc) and write the first k."""
        q = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        n = keys.shape[1]
        hist = cuda.shared.array(_HIST_BINS, int32)
        sums = cuda.shared.array(32, int32)
        state = cuda.shared.array(4, int64)  # need, keys above the prefix, done, overflow
        bits = cuda.shared.array(2, uint32)  # prefix, bound
        count = cuda.shared.array(1, int32)
        buf = cuda.shared.array(_CAP, uint64)
        if tid == 0:
            state[0] = k
            state[1] = 0
            state[2] = 0
            state[3] = 0
            bits[0] = uint32(0)
            bits[1] = uint32(0)
            count[0] = 0
        fixed = uint32(0)  # the key bits the prefix has fixed so far
        for r in range(3):
            shift, bins = _round(r)
            for b in range(tid, _HIST_BINS, nt):
                hist[b] = 0
            cuda.syncthreads()
            p = bits[0]
            for j in range(tid, n, nt):
                key = keys[q, j]
                if key != 0 and (key & fixed) == p:
                    cuda.atomic.add(hist, (key >> shift) & (_HIST_BINS - 1), 1)
            cuda.syncthreads()
            per = bins // 32  # 32 chunks of bins, chunk 0 the highest
            if tid < 32:
                total = 0
                for i in range(per):
                    total += hist[bins - 1 - tid * per - i]
                sums[tid] = total
            cuda.syncthreads()
            if tid == 0:
                need = state[0]
                cum = 0
                c = 0
                while c < 32 and cum + sums[c] < need:
                    cum += sums[c]
                    c += 1
                found = -1
                if c < 32:
                    b = bins - 1 - c * per
                    while found < 0:
                        if cum + hist[b] >= need:
                            found = b
                        else:
                            cum += hist[b]
                            b -= 1
                if found < 0:  # fewer than k keys qualify at all (only in round 0)
                    bits[1] = uint32(1)
                    state[2] = 1
                else:
                    low = uint32(bits[0] | (uint32(found) << shift))
                    if state[1] + cum + hist[found] <= _CAP:
                        bits[1] = low
                        state[2] = 1
                    elif r == 2:  # more than _CAP keys equal the k-th: the CPU answers
                        state[3] = 1
                        state[2] = 1
                    else:
                        state[1] += cum
                        state[0] = need - cum
                        bits[0] = low
            cuda.syncthreads()
            if state[2] != 0:  # the same shared value for every thread: all leave together
                break
            fixed = uint32(fixed | uint32((bins - 1) << shift))
        if state[3] != 0:
            if tid == 0:
                overflow[q] = 1
            return
        if tid == 0:
            overflow[q] = 0
        lo = bits[1]
        for i in range(tid, _CAP, nt):
            buf[i] = uint64(0)
        cuda.syncthreads()
        for j in range(tid, n, nt):
            key = keys[q, j]
            if key != 0 and key >= lo:
                slot = cuda.atomic.add(count, 0, 1)
                if slot < _CAP:
                    buf[slot] = (uint64(key) << uint64(32)) | (uint64(_U32) - uint64(j))
        cuda.syncthreads()
        m = 2  # sort the smallest power of two that holds the candidates
        while m < count[0]:
            m *= 2
        size = 2
        while size <= m:
            stride = size // 2
            while stride > 0:
                for i in range(tid, m, nt):
                    partner = i ^ stride
                    if partner > i:
                        a = buf[i]
                        b = buf[partner]
                        if (a < b) == ((i & size) == 0):
                            buf[i] = b
                            buf[partner] = a
                cuda.syncthreads()
                stride //= 2
            size *= 2
        for i in range(tid, k, nt):
            v = buf[i]
            out_keys[q, i] = uint32(v >> uint64(32))
            out_ids[q, i] = uint32(uint64(_U32) - (v & uint64(_U32)))


class _DeviceCatalogue:
    """A catalogue's device copy and its inverse norms (for cosine), made once."""

    def __init__(self, items: np.ndarray) -> None:
        self.items = cuda.to_device(np.ascontiguousarray(items))
        norms = np.linalg.norm(items.astype(np.float64), axis=1)
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.inv_norm = cuda.to_device(inv.astype(np.float32))
        self.workspace: _Workspace | None = None
        self.lock = threading.Lock()  # one search at a time owns the workspace


# Device copies keyed by the host array's identity (catalogues are immutable once loaded:
# replace the array object, not its contents, to refresh the copy).
_device_items: dict[int, tuple[weakref.ref, _DeviceCatalogue]] = {}


def _catalogue(items: np.ndarray) -> _DeviceCatalogue:
    entry = _device_items.get(id(items))
    if entry is not None and entry[0]() is items:
        return entry[1]
    for key in [key for key, (ref, _) in _device_items.items() if ref() is None]:
        del _device_items[key]
    dev = _DeviceCatalogue(items)
    _device_items[id(items)] = (weakref.ref(items), dev)
    return dev


_empty_mask = None


def _no_mask():
    """An empty device mask (no filter), made once."""
    global _empty_mask
    if _empty_mask is None:
        _empty_mask = cuda.to_device(np.zeros(0, dtype=np.uint8))
    return _empty_mask


class _Workspace:
    """Device buffers of one catalogue's searches, reused across calls (allocating a GiB of
    keys per call would cost more than the search); grown when a bigger group comes."""

    def __init__(self, rows: int, n: int, k: int) -> None:
        self.rows, self.n, self.k = rows, n, k
        self.keys = cuda.device_array((rows, n), dtype=np.uint32)
        self.out_keys = cuda.device_array((rows, k), dtype=np.uint32)
        self.out_ids = cuda.device_array((rows, k), dtype=np.uint32)
        self.overflow = cuda.device_array(rows, dtype=np.int32)
        self.views: dict[int, tuple] = {}

    def fits(self, rows: int, k: int) -> bool:
        return rows <= self.rows and k <= self.k

    def rows_of(self, g: int) -> tuple:
        """The buffers' first g rows (views made once per g: slicing costs host time)."""
        if g not in self.views:
            self.views[g] = (self.keys[:g], self.out_keys[:g], self.out_ids[:g], self.overflow[:g])
        return self.views[g]


def _workspace(cat: "_DeviceCatalogue", rows: int, k: int) -> _Workspace:
    ws = cat.workspace
    if ws is None or not ws.fits(rows, k):
        cat.workspace = None  # free the old buffers before allocating bigger ones
        ws = _Workspace(max(rows, ws.rows if ws else 0), cat.items.shape[0], max(k, 128))
        cat.workspace = ws
    return ws


def gpu_scan(q, items, k, cosine, indptr, ex_sorted, mask):
    """Sorted top-k of prepared inputs (as `kernels.exact` prepares them), k <= n_items.

    Returns (ids int64 [n_q, k], scores float32 [n_q, k], overflow int64 [m]): ids -1 /
    scores -inf pad answers with fewer than k qualifying items; `overflow` lists the queries
    left unanswered because more than `_CAP` items tie with their k-th score (the caller
    answers them on the CPU). Raises ValueError for k > MAX_K or a catalogue of 2**32 items
    or more (`topk` sends those to the CPU).
    """
    if not available():
        raise RuntimeError("no CUDA device visible: use kernels.topk (it falls back to the CPU)")
    n_q, n_items = q.shape[0], items.shape[0]
    if k > MAX_K or n_items >= 1 << 32:
        raise ValueError(f"the GPU top-k takes k <= {MAX_K} and fewer than 2**32 items")
    cat = _catalogue(items)
    d_mask = cuda.to_device(mask) if mask.size else _no_mask()
    group = max(1, min(n_q, _KEY_BUDGET // max(n_items, 1)))
    out_keys = np.zeros((n_q, k), dtype=np.uint32)
    out_ids = np.zeros((n_q, k), dtype=np.uint32)
    overflow = np.zeros(n_q, dtype=np.int32)
    with cat.lock:
        ws = _workspace(cat, group, k)
        for g0 in range(0, n_q, group):
            g1 = min(n_q, g0 + group)
            ptr = indptr[g0 : g1 + 1] - indptr[g0]
            ex = ex_sorted[indptr[g0] : indptr[g1]]
            o_keys, o_ids, o_over = _scan_group(cat, ws, q[g0:g1], k, cosine, ptr, ex, d_mask)
            out_keys[g0:g1], out_ids[g0:g1], overflow[g0:g1] = o_keys, o_ids, o_over
    scores = from_keys(out_keys)
    ids = np.where(out_keys == 0, -1, out_ids.astype(np.int64))
    return ids, scores, np.flatnonzero(overflow)


def _stage(name: str, t0: list[float]) -> None:
    """Add the time since t0[0] to `stage_ms[name]` (only when profiling)."""
    if stage_ms is None:
        return
    cuda.synchronize()
    now = time.perf_counter()
    stage_ms[name] = stage_ms.get(name, 0.0) + (now - t0[0]) * 1e3
    t0[0] = now


def _scan_group(cat, ws, q, k, cosine, indptr, ex, d_mask):
    g, n = q.shape[0], cat.items.shape[0]
    t0 = [time.perf_counter()]
    keys, out_keys, out_ids, overflow = ws.rows_of(g)
    d_q = cuda.to_device(np.ascontiguousarray(q))
    if g <= _GEMV_MAX and q.shape[1] <= _GEMV_DIMS:
        grid = -(-n // 256)
        _keys_kernel_gemv[grid, 256](d_q, cat.items, cat.inv_norm, cosine, d_mask, keys)
    elif g >= _WIDE_FROM:
        grid = (-(-n // _W_TILE), -(-g // _W_TILE))
        _keys_kernel_wide[grid, (16, 16)](d_q, cat.items, cat.inv_norm, cosine, d_mask, keys)
    else:
        grid = (-(-n // _TILE_ITEMS), -(-g // _TILE_QUERIES))
        _keys_kernel[grid, (_TILE_ITEMS, 4)](d_q, cat.items, cat.inv_norm, cosine, d_mask, keys)
    if ex.size:
        d_ex = cuda.to_device(ex)
        _exclude_kernel[-(-ex.size // 256), 256](cuda.to_device(indptr), d_ex, keys)
    _stage("scores", t0)
    _select_kernel[g, _SELECT_THREADS](keys, k, out_keys, out_ids, overflow)
    _stage("select", t0)
    result = (
        out_keys.copy_to_host()[:, :k],
        out_ids.copy_to_host()[:, :k],
        overflow.copy_to_host(),
    )
    _stage("copy back", t0)
    return result
