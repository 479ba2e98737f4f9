"""The batcher's Triton behaviours on their own: preferred batch sizes, and requests of different
shapes beyond the batch axis never merged into one call."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.batching import DynamicBatcher


class Blocking:
    """A fake model recording each call's inputs; the first call waits for ``gate``."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.gate.wait(120), "the test never opened the gate"
        self.calls.append(inputs["x"].shape)
        return {"y": inputs["x"] + 1}


def _queue_behind_a_running_batch(
    batcher: DynamicBatcher, model: Blocking, requests: list[np.ndarray]
) -> list:
    first = batcher.submit({"x": np.zeros((1, 2), np.float32)})
    assert model.entered.wait(120)
    futures = [batcher.submit({"x": x}) for x in requests]  # queue order: call order
    model.gate.set()
    outputs = [f.result(timeout=120) for f in [first, *futures]]
    for x, out in zip([np.zeros((1, 2)), *requests], outputs, strict=True):
        np.testing.assert_array_equal(out["y"], x + 1)  # each caller gets its own rows
    return outputs


@pytest.mark.parametrize(
    ("preferred", "batches"),
    [
        ((), [1, 5]),  # no preference: everything queued, up to max_batch_rows
        ((2, 4), [1, 4, 1]),  # the largest preferred size the queue fills, then the rest
        ((3,), [1, 3, 2]),
    ],
)
def test_preferred_batch_sizes(preferred: tuple[int, ...], batches: list[int]) -> None:
    model = Blocking()
    batcher = DynamicBatcher(
        model,
        max_batch_rows=8,
        max_queue_delay_us=0,
        max_queue_rows=100,
        preferred_batch_sizes=preferred,
    )
    rows = [np.full((1, 2), i, np.float32) for i in range(5)]
    _queue_behind_a_running_batch(batcher, model, rows)
    assert [shape[0] for shape in model.calls] == batches


def test_requests_of_other_shapes_run_in_their_own_batch() -> None:
    model = Blocking()
    batcher = DynamicBatcher(model, max_batch_rows=8, max_queue_delay_us=0, max_queue_rows=100)
    requests = [
        np.zeros((1, 2), np.float32),
        np.zeros((2, 2), np.float32),
        np.zeros((1, 3), np.float32),  # other width: cannot join the [n, 2] batch
        np.zeros((1, 2), np.float32),
    ]
    _queue_behind_a_running_batch(batcher, model, requests)
    assert model.calls == [(1, 2), (3, 2), (1, 3), (1, 2)]


def test_preferred_sizes_must_fit_the_batch() -> None:
    with pytest.raises(ValueError, match="preferred batch sizes"):
        DynamicBatcher(
            lambda x: x,
            max_batch_rows=4,
            max_queue_delay_us=0,
            max_queue_rows=10,
            preferred_batch_sizes=(8,),
        )
