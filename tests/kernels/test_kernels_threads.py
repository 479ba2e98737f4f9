"""set_threads: the budget reaches Numba in every calling thread and BLAS is pinned to one thread."""

import threading

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import kernels


@pytest.fixture
def restore_threads():
    before = kernels.get_threads()
    yield
    kernels.set_threads(before)


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

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(1, (5, 3))]
    assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")


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
