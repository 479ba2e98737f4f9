"""set_threads: the budget reaches Numba in every calling thread and BLAS is pinned to one thread."""

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import kernels
from kernels import threads
from tests.threads import Workers


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def restore_threads():
    """Undo set_threads: no budget again, BLAS back to its thread count."""
    budget, blas = threads._budget, max(blas_threads())
    yield
    threads._budget = budget
    numba.set_num_threads(kernels.get_threads())
    threadpool_limits(limits=blas, user_api="blas")


def test_budget_applies_in_other_threads(restore_threads):
    kernels.set_threads(1)
    assert kernels.get_threads() == 1
    seen = []
    # Large enough for a parallel scan: only the budget keeps it on one thread.
    items = np.random.default_rng(0).standard_normal((600_000, 4)).astype(np.float32)

    def worker():
        # A fresh thread starts with Numba's default count; topk must apply the budget itself.
        ids, _ = kernels.topk(items[:5], items, 3)
        seen.append((numba.get_num_threads(), ids.shape))

    with Workers() as workers:  # the worker's own error, if any, fails the test
        workers.start(worker)
    assert seen == [(1, (5, 3))]
    assert all(n == 1 for n in blas_threads())


def test_small_calls_stay_on_one_thread(restore_threads):
    kernels.set_threads(numba.config.NUMBA_NUM_THREADS)
    kernels.hash_strings(["a", "b"])
    assert numba.get_num_threads() == 1
    kernels.topk(np.ones(4, dtype=np.float32), np.ones((10, 4), dtype=np.float32), 2)
    assert numba.get_num_threads() == 1


def test_rejects_out_of_range(restore_threads):
    for bad in (0, numba.config.NUMBA_NUM_THREADS + 1):
        with pytest.raises(ValueError):
            kernels.set_threads(bad)


def test_overlapping_blas_limits_restore_the_original(restore_threads):
    threads._budget = None  # as in a process that never called set_threads
    threadpool_limits(limits=2, user_api="blas")
    original = blas_threads()
    # Two calls overlapping as on a server's pool (first in, first out), driven from the main
    # thread: OpenBLAS ignores some limits set from other threads, which the test must not hit.
    first, second = threads.single_threaded_blas(), threads.single_threaded_blas()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    still_inside = blas_threads()
    second.__exit__(None, None, None)
    assert set(still_inside) == {1}
    assert blas_threads() == original


@pytest.mark.parametrize(
    "kernel",
    [
        "kernels.exact._stream_scan",
        "kernels.exact._blocked_scan",
        "kernels._ivf_scan.ivf_lists_scan",
        "kernels._ivf_scan.rescore_shortlist",
        "kernels._heap.merge_heaps",
    ],
)
def test_scan_kernels_release_the_gil(kernel: str) -> None:
    """A retrieval scan of a large catalogue takes milliseconds: holding the GIL through it
    would stop every other request's Python work (gRPC threads, feature gathers) meanwhile,
    so two Recommend calls could never scan on two cores at once."""
    import importlib

    module, name = kernel.rsplit(".", 1)
    dispatcher = getattr(importlib.import_module(module), name)
    assert dispatcher.targetoptions.get("nogil") is True
