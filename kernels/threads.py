"""Thread budget for the kernels: Numba's pool sized from settings, BLAS kept out of its way.

Numba's thread count is per calling thread, so every public kernel re-applies the budget on
entry; the BLAS pool (OpenBLAS) is limited to one thread while a Numba kernel calls BLAS from
its own threads, because both pools spinning on the same cores made a blocked scan 2-15x slower.
"""

import contextlib
import functools
import threading
from collections.abc import Iterator

import numba

_budget: int | None = None


def set_threads(n: int) -> None:
    """Use at most `n` threads in every kernel (the engine passes its settings' Numba share).

    Also limits BLAS (OpenBLAS, which NumPy and Numba's block products use) to one thread for
    the whole process: the kernels already run BLAS inside each of their own threads. Call it
    from the main thread at startup: OpenBLAS ignores some limits set from other threads
    (seen with OpenBLAS 0.3.31), which is also why OPENBLAS_NUM_THREADS=1 in the service's
    environment is the most robust setting of all.
    """
    global _budget
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be in [1, {numba.config.NUMBA_NUM_THREADS}]")
    _budget = n
    numba.set_num_threads(n)
    _blas_controller().limit(limits=1, user_api="blas")


def get_threads() -> int:
    """The thread budget: set_threads' value, else all of Numba's threads."""
    return numba.config.NUMBA_NUM_THREADS if _budget is None else _budget


def apply_budget(work: float, parallel_from: float) -> int:
    """Set the calling thread's Numba thread count for a call doing `work`; returns it.

    Numba's setting is thread-local, so each call applies it. Work below `parallel_from` runs on
    one thread: waking the pool costs 0.2-2 ms on a loaded 2-core machine, far more than a
    request-sized hash, gather or small scan (with one thread a parallel kernel starts in ~10 us).
    """
    n = get_threads() if work >= parallel_from else 1
    numba.set_num_threads(n)
    return n


@functools.cache
def _blas_controller():
    # Imported lazily: threadpoolctl inspects every loaded library, which takes milliseconds.
    # scipy's BLAS (what Numba's np.dot calls) must be loaded before it is inspected.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with BLAS on one thread (no-op once set_threads limited it for good).

    Reference-counted across threads: the first caller limits BLAS, the last one restores it,
    so overlapping calls from a server's thread pool never leave the limit half-undone. Best
    effort from a non-main thread (see set_threads); services should call set_threads.
    """
    global _blas_users, _blas_limiter
    if _budget is not None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = _blas_controller().limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
