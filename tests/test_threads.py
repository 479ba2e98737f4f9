"""The worker-thread helper fails the test for any exception a worker raises."""

from __future__ import annotations

import threading

import pytest

from tests.threads import WorkerFailed, Workers


def test_any_exception_in_a_worker_fails_the_join() -> None:
    def boom() -> None:
        raise KeyError("not one of the expected types")

    with pytest.raises(WorkerFailed, match="KeyError") as caught, Workers() as workers:
        workers.start(lambda: None)
        workers.start(boom)
    assert isinstance(caught.value.__cause__, KeyError)


def test_a_worker_that_never_finishes_fails_the_join() -> None:
    release = threading.Event()
    workers = Workers()
    workers.start(release.wait)
    with pytest.raises(AssertionError, match="never finished"):
        workers.join(timeout=0.01)
    release.set()
    workers.join()
