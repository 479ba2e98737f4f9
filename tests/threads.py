"""Worker threads whose failures fail the test: a thread that raises (an assertion, an
unexpected exception type) is re-raised in the test thread when the workers are joined, and a
worker that never finishes fails the join instead of being left behind."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

JOIN_TIMEOUT_S = 120.0


class WorkerFailed(AssertionError):
    """A worker thread raised; the first failure is the cause, the count is in the message."""


class Workers:
    """Start threads with :meth:`start`; :meth:`join` (or leaving the ``with`` block) waits
    for all of them and raises the first exception any of them raised."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.errors: list[tuple[str, BaseException]] = []

    def start(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # every kind of failure, not a chosen few
                with self._lock:
                    self.errors.append((threading.current_thread().name, exc))

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        for thread in self._threads:
            thread.join(timeout)
        stuck = [t.name for t in self._threads if t.is_alive()]
        self.raise_errors()
        assert not stuck, f"worker threads never finished: {stuck}"

    def raise_errors(self) -> None:
        with self._lock:
            errors = list(self.errors)
        if errors:
            name, first = errors[0]
            raise WorkerFailed(
                f"{len(errors)} worker thread(s) failed; first in {name}: {first!r}"
            ) from first

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.join()
        else:  # the test already failed: don't mask its error, but don't leak threads either
            for thread in self._threads:
                thread.join(5)
