"""Dynamic server-side batching: requests (each many rows) queue up and are cut into one
inference call at ``max_batch_rows`` rows or ``max_queue_delay_us`` after the first waiting
request, whichever comes first; outputs are split back to their requests.

- A full queue (``max_queue_rows``) refuses at once with RESOURCE_EXHAUSTED.
- A request whose deadline passed while queued is dropped before inference, and so is one
  whose caller cancelled (`request_alive`).
- A failed batch fails each of its requests with the reason.
- A request larger than ``max_batch_rows`` runs alone; requests are never split.

No thread of its own: the callers run the batches (leader/follower). A caller that finds a
free execution slot (``workers`` of them) runs the batch itself, inline, so a request on an
idle model costs no thread hand-off at all; callers arriving meanwhile queue, and when the
leader's own request is answered it hands its slot to the oldest waiting caller, which runs
the next batch (everything queued by then) and answers the others in it. Under load that is
one wake-up per request instead of two (caller to a batcher thread and back).

It is a layer attached to a model at load time (``DynamicBatcher(model_run, ...)``), not code
inside each model, and is unit-tested without a server.
"""

from __future__ import annotations

import collections
import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

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


class _Pending:
    """One queued request: its inputs, and what its waiting caller is told (answered, or
    promoted to run the next batch). State changes happen under the batcher's lock; the
    caller's wake-up event exists only once it has to sleep (an idle model's request, run
    inline, never needs one)."""

    __slots__ = (
        "alive",
        "deadline",
        "enqueued",
        "error",
        "event",
        "inputs",
        "lock",
        "promoted",
        "result",
        "rows",
        "settled",
    )

    def __init__(
        self,
        inputs: Any,
        rows: int,
        deadline: float | None,
        alive: Callable[[], bool] | None,
        lock: threading.Lock,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.alive = alive
        self.lock = lock  # the batcher's
        self.enqueued = time.monotonic()
        self.event: threading.Event | None = None
        self.settled = False  # result or error is set
        self.promoted = False  # holds an execution slot: must run batches until settled
        self.result: Any = None
        self.error: BaseException | None = None

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        with self.lock:
            if self.settled:
                return
            self.result, self.error, self.settled = result, error, True
            event = self.event
        if event is not None:
            event.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


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
        preferred_batch_sizes: Sequence[int] = (),
    ) -> None:
        if max_batch_rows < 1 or max_queue_rows < 1 or workers < 1 or max_queue_delay_us < 0:
            raise ValueError("batcher sizes must be positive and the delay non-negative")
        if any(not 0 < size <= max_batch_rows for size in preferred_batch_sizes):
            raise ValueError("preferred batch sizes must lie in 1..max_batch_rows")
        self._run = run
        self.max_batch_rows = max_batch_rows
        # Triton's preferred_batch_size: cut at the largest of these the queue fills exactly.
        self.preferred = frozenset(preferred_batch_sizes)
        self._full = max(preferred_batch_sizes, default=max_batch_rows)
        self.max_queue_delay = max_queue_delay_us / 1e6
        self.max_queue_rows = max_queue_rows
        self.workers = workers
        self.name = name
        self._on_batch = on_batch
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._running = 0  # execution slots taken (leaders running or promoted)
        self._closed = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def infer(self, inputs: Arrays, deadline: float | None = None) -> Arrays:
        """Queue one request and wait for its slice of the batch outputs (re-raising the
        batch's error); the calling thread runs batches itself when it holds a slot."""
        pending = self._enqueue(inputs, deadline)
        self._wait(pending)
        return pending.outcome()

    def submit(self, inputs: Arrays, deadline: float | None = None) -> Future[Arrays]:
        """Queue one request now and wait for it on a helper thread: the asynchronous form of
        :meth:`infer` (queue order is the order of the calls)."""
        pending = self._enqueue(inputs, deadline)
        future: Future[Arrays] = Future()

        def wait() -> None:
            self._wait(pending)
            if pending.error is not None:
                future.set_exception(pending.error)
            else:
                future.set_result(pending.result)

        threading.Thread(target=wait, name=f"batcher-{self.name}-wait", daemon=True).start()
        return future

    def close(self) -> None:
        """Refuse new requests; those already queued still run (their callers drive them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _enqueue(self, inputs: Any, deadline: float | None) -> _Pending:
        rows = self._size(inputs)
        if deadline is None:
            deadline = request_deadline.get()
        pending = _Pending(inputs, rows, deadline, request_alive.get(), self._lock)
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
            if self._running < self.workers:
                self._running += 1
                pending.promoted = True
            elif self.max_queue_delay:
                self._cond.notify()  # a leader may be waiting for company
        return pending

    def _wait(self, pending: _Pending) -> None:
        """Until ``pending`` is answered: sleep, or run batches while holding a slot."""
        while True:
            with self._cond:
                if pending.settled and not pending.promoted:
                    return
                lead = pending.promoted
                if not lead:
                    if pending.event is None:
                        pending.event = threading.Event()
                    event = pending.event
            if lead:
                self._lead(pending)
                continue
            event.wait()
            event.clear()

    def _lead(self, pending: _Pending) -> None:
        """Run batches from the front of the queue until ``pending`` is answered, then pass
        the slot to the oldest waiting request (or free it)."""
        try:
            while not pending.settled:
                batch = self._take_batch()
                if not batch:
                    break
                try:
                    self._execute(batch)
                except Exception as exc:  # e.g. a metrics hook: never leave a caller waiting
                    for p in batch:
                        p.set_exception(exc)
        finally:
            with self._cond:
                pending.promoted = False
                # The oldest queued request not already holding a slot runs the next batch.
                nxt = next((p for p in self._queue if not p.promoted), None)
                if nxt is not None:
                    nxt.promoted = True
                    if nxt.event is not None:  # else it has not gone to sleep yet
                        nxt.event.set()
                else:
                    self._running -= 1

    def _take_batch(self) -> list[_Pending]:
        """The front of the queue up to ``max_batch_rows`` rows, waiting up to
        ``max_queue_delay`` after the first request arrived for more to join. Only requests
        whose inputs agree with the first one's beyond the batch axis join it. With preferred
        sizes, the batch stops waiting once it reaches the largest and is cut back to the
        largest preferred size its requests fill exactly (the rest stay queued, in order)."""
        with self._cond:
            if not self._queue:
                return []
            batch = [self._queue.popleft()]
            rows = batch[0].rows
            cut = batch[0].enqueued + self.max_queue_delay
            shapes = None
            while rows < self.max_batch_rows and rows < self._full:
                if not self._queue:
                    remaining = cut - time.monotonic()
                    if remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
                    continue
                if rows + self._queue[0].rows > self.max_batch_rows:
                    break
                if shapes is None:
                    shapes = _tail_shapes(batch[0].inputs)
                if _tail_shapes(self._queue[0].inputs) != shapes:
                    break
                nxt = self._queue.popleft()
                batch.append(nxt)
                rows += nxt.rows
            if self.preferred and len(batch) > 1 and rows not in self.preferred:
                total, keep = 0, 0
                for i, p in enumerate(batch, 1):
                    total += p.rows
                    if total in self.preferred:
                        keep = i
                if keep:
                    rest = batch[keep:]
                    del batch[keep:]
                    self._queue.extendleft(reversed(rest))
                    rows -= sum(p.rows for p in rest)
            self._queued_rows -= rows
            return batch

    def _execute(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        cancelled = 0
        for p in batch:
            if p.deadline is not None and p.deadline <= now:
                p.set_exception(
                    DeadlineExceeded(f"model {self.name}: deadline passed while queued")
                )
            elif p.alive is not None and not p.alive():
                cancelled += 1
                p.set_exception(Cancelled(f"model {self.name}: the caller went away"))
            else:
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
                p.set_exception(exc)
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

    def _size(self, inputs: Any) -> int:
        """Rows one request counts for (against max_batch_rows and max_queue_rows)."""
        return _rows(inputs)

    def _compute(self, live: list[_Pending]) -> None:
        """Run the batch and answer each request with its slice of the outputs."""
        if len(live) == 1:
            live[0].set_result(self._run(live[0].inputs))
            return
        names = live[0].inputs.keys()
        merged = {n: np.concatenate([p.inputs[n] for p in live]) for n in names}
        outputs = self._run(merged)
        offsets = np.cumsum([0] + [p.rows for p in live])
        for p, lo, hi in zip(live, offsets[:-1], offsets[1:], strict=True):
            p.set_result({k: v[lo:hi] for k, v in outputs.items()})


def _tail_shapes(inputs: Any) -> object:
    """What must agree for two requests to share a batch: each input's shape past axis 0."""
    if not isinstance(inputs, dict):
        return None
    return tuple((name, a.shape[1:], a.dtype) for name, a in inputs.items())


def _rows(inputs: Arrays) -> int:
    sizes = {a.shape[0] if a.ndim else 1 for a in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()
