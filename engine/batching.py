"""Dynamic server-side batching: requests (each many rows) queue up and are cut into one
inference call at ``max_batch_rows`` rows or ``max_queue_delay_us`` after the first waiting
request, whichever comes first; outputs are split back to their requests.

- A full queue (``max_queue_rows``) refuses at once with RESOURCE_EXHAUSTED.
- A request whose deadline passed while queued is dropped before inference, and so is one
  whose caller cancelled (`request_alive`).
- A failed batch fails each of its requests with the reason.
- A request larger than ``max_batch_rows`` runs alone; requests are never split.

It is a layer attached to a model at load time (``DynamicBatcher(model_run, ...)``), not code
inside each model, and is unit-tested without a server.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from engine.errors import Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable

Arrays = dict[str, np.ndarray]

# Monotonic deadline of the RPC being served (set by the servicer), read when work is queued.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_deadline", default=None
)
# Whether the caller still waits (the servicer sets the RPC context's `is_active`): work for
# a cancelled call is dropped when its batch is cut, like work whose deadline passed.
request_alive: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar(
    "request_alive", default=None
)


class BatcherClosed(Unavailable):
    """The batcher was closed (its model was replaced or unloaded)."""


@dataclass(frozen=True)
class BatchInfo:
    """What one inference call did, for metrics."""

    rows: int
    requests: int
    queue_seconds: tuple[float, ...]
    compute_seconds: float
    dropped_expired: int
    failed: bool
    dropped_cancelled: int = 0


@dataclass
class _Pending:
    inputs: Arrays
    rows: int
    deadline: float | None
    alive: Callable[[], bool] | None = None
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[Arrays] = field(default_factory=Future)


class DynamicBatcher:
    """Batches calls of ``run`` (named arrays in, named arrays out, batch on axis 0)."""

    def __init__(
        self,
        run: Callable[[Arrays], Arrays],
        *,
        max_batch_rows: int,
        max_queue_delay_us: int,
        max_queue_rows: int,
        workers: int = 1,
        name: str = "model",
        on_batch: Callable[[BatchInfo], None] | None = None,
    ) -> None:
        if max_batch_rows < 1 or max_queue_rows < 1 or workers < 1 or max_queue_delay_us < 0:
            raise ValueError("batcher sizes must be positive and the delay non-negative")
        self._run = run
        self.max_batch_rows = max_batch_rows
        self.max_queue_delay = max_queue_delay_us / 1e6
        self.max_queue_rows = max_queue_rows
        self.name = name
        self._on_batch = on_batch
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"batcher-{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def submit(self, inputs: Arrays, deadline: float | None = None) -> Future[Arrays]:
        """Queue one request; its future resolves to its slice of the batch outputs."""
        rows = self._size(inputs)
        if deadline is None:
            deadline = request_deadline.get()
        pending = _Pending(inputs, rows, deadline, request_alive.get())
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"model {self.name} is shutting down")
            if self._queue and self._queued_rows + rows > self.max_queue_rows:
                raise ResourceExhausted(
                    f"model {self.name}: queue full ({self._queued_rows} rows waiting, "
                    f"limit {self.max_queue_rows}); retry with back-off"
                )
            self._queue.append(pending)
            self._queued_rows += rows
            self._cond.notify()
        return pending.future

    def infer(self, inputs: Arrays, deadline: float | None = None) -> Arrays:
        """Submit and wait for the result (re-raising the batch's error)."""
        return self.submit(inputs, deadline).result()

    def close(self) -> None:
        """Finish what is queued, then stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    def _take_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            cut = batch[0].enqueued + self.max_queue_delay
            while rows < self.max_batch_rows:
                if not self._queue:
                    remaining = cut - time.monotonic()
                    if remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
                    continue
                if rows + self._queue[0].rows > self.max_batch_rows:
                    break
                nxt = self._queue.popleft()
                batch.append(nxt)
                rows += nxt.rows
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._execute(batch)

    def _execute(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        cancelled = 0
        for p in batch:
            if p.deadline is not None and p.deadline <= now:
                p.future.set_exception(
                    DeadlineExceeded(f"model {self.name}: deadline passed while queued")
                )
            elif p.alive is not None and not p.alive():
                cancelled += 1
                p.future.set_exception(Cancelled(f"model {self.name}: the caller went away"))
            elif p.future.set_running_or_notify_cancel():
                live.append(p)
        dropped = len(batch) - len(live) - cancelled
        if not live:
            # Still report the drops: a batch of only expired requests is the common case
            # once callers give up behind a slow batch.
            if (dropped or cancelled) and self._on_batch is not None:
                self._on_batch(BatchInfo(0, 0, (), 0.0, dropped, False, cancelled))
            return
        queue_seconds = tuple(now - p.enqueued for p in live)
        start = time.perf_counter()
        failed = False
        try:
            self._compute(live)
        except Exception as exc:  # every waiting request learns why its batch failed
            failed = True
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
        if self._on_batch is not None:
            self._on_batch(
                BatchInfo(
                    rows=sum(p.rows for p in live),
                    requests=len(live),
                    queue_seconds=queue_seconds,
                    compute_seconds=time.perf_counter() - start,
                    dropped_expired=dropped,
                    failed=failed,
                    dropped_cancelled=cancelled,
                )
            )

    def _size(self, inputs: Arrays) -> int:
        """Rows one request counts for (against max_batch_rows and max_queue_rows)."""
        return _rows(inputs)

    def _compute(self, live: list[_Pending]) -> None:
        """Run the batch and resolve each request's future with its slice of the outputs."""
        if len(live) == 1:
            live[0].future.set_result(self._run(live[0].inputs))
            return
        names = live[0].inputs.keys()
        merged = {n: np.concatenate([p.inputs[n] for p in live]) for n in names}
        outputs = self._run(merged)
        offsets = np.cumsum([0] + [p.rows for p in live])
        for p, lo, hi in zip(live, offsets[:-1], offsets[1:], strict=True):
            p.future.set_result({k: v[lo:hi] for k, v in outputs.items()})


def _rows(inputs: Arrays) -> int:
    sizes = {a.shape[0] if a.ndim else 1 for a in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()
