"""The dynamic batcher on its own: cutting, splitting, errors, deadlines, a full queue."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.batching import BatchInfo, DynamicBatcher, request_deadline
from engine.errors import DeadlineExceeded, ResourceExhausted
from tests.threads import Workers


class Recorder:
    """A fake model: doubles ``x`` and records each call's batch size; can block or fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a batch is inside the model
        self.fail: Exception | None = None

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.gate.wait(120), "the test never opened the gate"
        self.calls.append(len(inputs["x"]))
        if self.fail is not None:
            raise self.fail
        return {"y": inputs["x"] * 2, "z": inputs["x"][:, :1] + 1}


def _rows(n: int, start: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": (np.arange(n * 2, dtype=np.float32).reshape(n, 2) + start)}


def _inside(model: Recorder) -> None:
    """Until a batch is inside the (blocked) model."""
    assert model.entered.wait(120), "no batch reached the model"


def _until_past(deadline: float) -> None:
    """Until the monotonic clock has passed ``deadline`` (however long the machine stalls)."""
    while time.monotonic() <= deadline:
        time.sleep(0.001)


@pytest.fixture
def model() -> Recorder:
    return Recorder()


def test_concurrent_requests_share_one_call_and_get_their_own_rows(model: Recorder) -> None:
    # The first request waits (up to 10 min: however slow the machine) for company; the
    # batch is cut the moment the other three bring it to max_batch_rows.
    batcher = DynamicBatcher(
        model, max_batch_rows=11, max_queue_delay_us=600_000_000, max_queue_rows=1000
    )
    first = batcher.submit(_rows(1, 1000))
    futures = [batcher.submit(_rows(n, start=10 * n)) for n in (3, 5, 2)]
    assert first.result(120)["y"].shape == (1, 2)
    for n, f in zip((3, 5, 2), futures, strict=True):
        out = f.result(120)
        np.testing.assert_array_equal(out["y"], _rows(n, start=10 * n)["x"] * 2)
        np.testing.assert_array_equal(out["z"], _rows(n, start=10 * n)["x"][:, :1] + 1)
    assert model.calls == [11]  # cut as soon as it reached max_batch_rows
    batcher.close()


def test_batch_is_cut_at_max_rows_and_big_requests_run_alone(model: Recorder) -> None:
    batcher = DynamicBatcher(
        model, max_batch_rows=8, max_queue_delay_us=100_000, max_queue_rows=1000
    )
    model.gate.clear()
    blocker = batcher.submit(_rows(8))  # a full batch: cut at once, then held inside the model
    _inside(model)
    futures = [batcher.submit(_rows(n)) for n in (5, 3, 4, 20)]
    model.gate.set()
    for f in [blocker, *futures]:
        f.result(120)
    # 5+3 fill a batch of 8; 4 cannot join them; 20 exceeds the limit and runs alone.
    assert model.calls == [8, 8, 4, 20]
    batcher.close()


def test_delay_cuts_a_partial_batch(model: Recorder) -> None:
    infos: list[BatchInfo] = []
    batcher = DynamicBatcher(
        model,
        max_batch_rows=1000,
        max_queue_delay_us=20_000,
        max_queue_rows=1000,
        on_batch=infos.append,
    )
    start = time.monotonic()
    batcher.infer(_rows(2))
    waited = time.monotonic() - start
    assert model.calls == [2]
    assert waited >= 0.015  # it waited for company, then gave up
    assert infos[0].rows == 2 and infos[0].requests == 1 and not infos[0].failed
    batcher.close()


def test_failed_batch_fails_every_request_with_the_reason(model: Recorder) -> None:
    batcher = DynamicBatcher(
        model, max_batch_rows=100, max_queue_delay_us=100_000, max_queue_rows=1000
    )
    model.fail = RuntimeError("graph exploded")
    model.gate.clear()
    futures = [batcher.submit(_rows(2)) for _ in range(3)]
    model.gate.set()
    for f in futures:
        with pytest.raises(RuntimeError, match="graph exploded"):
            f.result(120)
    model.fail = None
    assert batcher.infer(_rows(1))["y"].shape == (1, 2)  # and it keeps serving
    batcher.close()


def test_full_queue_refuses_at_once(model: Recorder) -> None:
    batcher = DynamicBatcher(model, max_batch_rows=10, max_queue_delay_us=0, max_queue_rows=10)
    model.gate.clear()
    running = batcher.submit(_rows(5))
    _inside(model)  # the worker took it and is blocked inside the model
    queued = batcher.submit(_rows(8))
    # Refused while the model is still blocked: submit does not wait for room in the queue.
    with pytest.raises(ResourceExhausted, match="queue full"):
        batcher.submit(_rows(3))
    assert not model.gate.is_set() and model.calls == []
    model.gate.set()
    running.result(120)
    queued.result(120)
    batcher.close()


def test_expired_requests_are_dropped_before_inference(model: Recorder) -> None:
    infos: list[BatchInfo] = []
    batcher = DynamicBatcher(
        model, max_batch_rows=100, max_queue_delay_us=0, max_queue_rows=1000, on_batch=infos.append
    )
    model.gate.clear()
    blocker = batcher.submit(_rows(1))
    _inside(model)
    soon = time.monotonic() + 0.01
    expired = batcher.submit(_rows(4), deadline=soon)
    token = request_deadline.set(soon)  # the servicer's way of passing it
    try:
        expired_ctx = batcher.submit(_rows(6))
    finally:
        request_deadline.reset(token)
    alive = batcher.submit(_rows(3), deadline=time.monotonic() + 600)
    _until_past(soon)  # both expired while queued behind the blocked batch
    model.gate.set()
    blocker.result(120)
    with pytest.raises(DeadlineExceeded):
        expired.result(120)
    with pytest.raises(DeadlineExceeded):
        expired_ctx.result(120)
    assert alive.result(120)["y"].shape == (3, 2)
    assert model.calls == [1, 3]  # the expired rows never reached the model
    assert infos[-1].dropped_expired == 2
    batcher.close()


def test_a_batch_of_only_expired_requests_still_reports_the_drops(model: Recorder) -> None:
    infos: list[BatchInfo] = []
    batcher = DynamicBatcher(
        model, max_batch_rows=1, max_queue_delay_us=0, max_queue_rows=1000, on_batch=infos.append
    )
    model.gate.clear()
    blocker = batcher.submit(_rows(1))
    _inside(model)
    soon = time.monotonic() + 0.01
    expired = batcher.submit(_rows(1), deadline=soon)
    _until_past(soon)
    model.gate.set()
    blocker.result(120)
    with pytest.raises(DeadlineExceeded):
        expired.result(120)
    batcher.close()
    assert model.calls == [1]
    assert [(i.requests, i.dropped_expired) for i in infos] == [(1, 0), (0, 1)]


def test_inputs_must_agree_on_batch_size(model: Recorder) -> None:
    batcher = DynamicBatcher(model, max_batch_rows=10, max_queue_delay_us=0, max_queue_rows=100)
    with pytest.raises(ValueError, match="batch size"):
        batcher.submit({"x": np.zeros((2, 2)), "w": np.zeros((3, 2))})
    batcher.close()


def test_an_idle_batcher_runs_the_request_in_the_callers_thread() -> None:
    ran_on: list[int] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ran_on.append(threading.get_ident())
        return {"y": inputs["x"] + 1}

    batcher = DynamicBatcher(run, max_batch_rows=64, max_queue_delay_us=0, max_queue_rows=1000)
    for _ in range(3):
        np.testing.assert_array_equal(batcher.infer(_rows(2))["y"], _rows(2)["x"] + 1)
    assert ran_on == [threading.get_ident()] * 3  # no hand-off to another thread
    batcher.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_callers_each_get_their_own_rows_and_the_slots_come_back(workers: int) -> None:
    calls: list[int] = []

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 3}

    batcher = DynamicBatcher(
        run, max_batch_rows=16, max_queue_delay_us=0, max_queue_rows=100_000, workers=workers
    )
    start = threading.Barrier(8)

    def caller(seed: int) -> None:
        rng = np.random.default_rng(seed)
        start.wait()
        for _ in range(200):
            n = int(rng.integers(1, 6))
            x = _rows(n, start=float(rng.integers(0, 1000)))
            np.testing.assert_array_equal(batcher.infer(x)["y"], x["x"] * 3)

    with Workers() as workers:  # any caller's failure, or one never answered, fails the test
        for i in range(8):
            workers.start(caller, i)
    assert sum(calls) > 0 and max(calls) <= 16  # never past max_batch_rows
    assert batcher._running == 0 and batcher.queued_rows == 0  # every slot was handed back
    batcher.close()
