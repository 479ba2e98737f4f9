"""The load generator's engine: closed-loop or open-loop traffic over one asyncio channel.

Requests are pre-serialised bytes sent through a raw multicallable (no per-call protobuf
work), so one core can drive far more calls than a Python server answers. Open-loop latency
starts at the intended send time: if the generator or server falls behind, the delay shows
up in the percentiles instead of being silently absorbed (coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import grpc
import grpc.aio
import numpy as np

from clients.latency import NOT_SENT, OK, LatencyHistogram, Samples, Summary, summarise
from clients.workload import Workload

Arrivals = Literal["poisson", "constant"]


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """One run: closed loop when `concurrency` is set, open loop when `rate` is."""

    duration: float
    concurrency: int | None = None
    rate: float | None = None
    arrivals: Arrivals = "poisson"
    warmup: float = 0.0
    timeout: float = 5.0
    """Deadline of each call in seconds."""
    max_in_flight: int = 10_000
    """Open loop: most calls in flight at once; sends beyond wait (and count as late)."""
    progress_interval: float = 1.0
    seed: int = 0
    phase: float = 0.0
    """Open loop: delay of the first send, so that several generator processes sharing one
    constant rate interleave their sends instead of firing together."""

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give exactly one of concurrency (closed loop) and rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.duration <= 0 or self.warmup < 0:
            raise ValueError("duration must be > 0 and warmup >= 0")


@dataclass(frozen=True, slots=True)
class Progress:
    """A live view of a run, reported every `progress_interval` seconds."""

    elapsed: float
    completed: int
    rate: float  # completions per second over the last interval
    errors: int
    p99_ms: float  # over successful calls so far (warm-up included)
    in_flight: int


def arrival_times(
    rate: float,
    horizon: float,
    arrivals: Arrivals,
    rng: np.random.Generator,
    phase: float = 0.0,
) -> np.ndarray:
    """Send times in [0, horizon): a Poisson process (exponential gaps) or a constant rate,
    the first at `phase` seconds."""
    expected = int(rate * horizon) + 1
    if arrivals == "constant":
        times = np.arange(expected) / rate + phase
    else:
        # Draw a few standard deviations more gaps than expected, then cut at the horizon.
        gaps = rng.exponential(1.0 / rate, size=expected + 6 * int(np.sqrt(expected)) + 16)
        times = np.cumsum(gaps) - gaps[0] + phase
    return times[times < horizon]


class _Run:
    """State shared by the senders of one run."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        workload: Workload,
        settings: LoadSettings,
        metadata: Sequence[tuple[str, str]],
    ) -> None:
        # No serialisers: requests are bytes already and responses stay undecoded.
        self.call = channel.unary_unary(workload.method)
        self.requests = itertools.cycle(workload.requests)
        self.settings = settings
        self.metadata = tuple(metadata)
        self.samples = Samples()
        self.in_flight = 0
        self.start = 0.0
        # Request ids "<run>-<n>": unique like a uuid4 per call but cheaper to make, which
        # matters when one core has to drive ten thousand calls a second.
        self.run_id = uuid.uuid4().hex[:12]
        self.sequence = itertools.count()

    def now(self) -> float:
        return time.perf_counter() - self.start

    async def send(self, intended: float) -> None:
        """One call; its latency counts from `intended`, seconds after the run's start."""
        self.in_flight += 1
        metadata = (*self.metadata, ("x-request-id", f"{self.run_id}-{next(self.sequence):x}"))
        try:
            await self.call(next(self.requests), timeout=self.settings.timeout, metadata=metadata)
            status = OK
        except grpc.RpcError as error:
            status = error.code().name if hasattr(error, "code") else "UNKNOWN"
        finally:
            self.in_flight -= 1
        self.samples.add(intended, self.now() - intended, status)

    async def closed_loop(self, end: float, concurrency: int) -> None:
        async def worker() -> None:
            while (intended := self.now()) < end:
                await self.send(intended)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def open_loop(self, end: float, rate: float) -> None:
        """Send at the scheduled times from a fixed pool of `max_in_flight` senders.

        Each sender takes the next scheduled time, waits for it and sends. When every sender
        is busy the next send goes out late and the lateness counts in its latency (as in
        wrk2); a request still unsent `timeout` seconds after its time is recorded as
        NOT_SENT, so an overloaded server cannot stretch the run without bound.
        """
        rng = np.random.default_rng(self.settings.seed)
        schedule = arrival_times(
            rate, end, self.settings.arrivals, rng, self.settings.phase
        ).tolist()
        slots = iter(schedule)
        timeout = self.settings.timeout

        async def worker() -> None:
            for intended in slots:
                delay = intended - self.now()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay > timeout:
                    self.samples.add(intended, 0.0, NOT_SENT)
                    continue
                await self.send(intended)

        senders = min(self.settings.max_in_flight, len(schedule))
        await asyncio.gather(*(worker() for _ in range(senders)))

    async def report(self, on_progress: Callable[[Progress], None]) -> None:
        """Call `on_progress` every interval, looking only at the calls finished since the
        last report (a full pass over all samples would slow down as the run goes on)."""
        histogram, errors, seen, last_time = LatencyHistogram(), 0, 0, self.now()
        while True:
            await asyncio.sleep(self.settings.progress_interval)
            count, now = len(self.samples), self.now()
            status = np.asarray(self.samples.status[seen:count])
            latency = np.asarray(self.samples.latency[seen:count])
            histogram.add(latency[status == OK])
            errors += int((status != OK).sum())
            on_progress(
                Progress(
                    elapsed=now,
                    completed=count,
                    rate=(count - seen) / (now - last_time),
                    errors=errors,
                    p99_ms=histogram.quantile(0.99) * 1e3,
                    in_flight=self.in_flight,
                )
            )
            seen, last_time = count, now


async def run_load(
    channel: grpc.aio.Channel,
    workload: Workload,
    settings: LoadSettings,
    metadata: Sequence[tuple[str, str]] = (),
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[Summary, Samples]:
    """Drive `workload` for warm-up + duration seconds; summarise the measured window.

    Returns the summary and the measured samples (times relative to the end of warm-up).
    """
    run = _Run(channel, workload, settings, metadata)
    end = settings.warmup + settings.duration
    cpu_start = time.process_time()
    run.start = time.perf_counter()
    reporter = asyncio.create_task(run.report(on_progress)) if on_progress else None
    try:
        if settings.concurrency is not None:
            await run.closed_loop(end, settings.concurrency)
        elif settings.rate is not None:
            await run.open_loop(end, settings.rate)
    finally:
        if reporter:
            reporter.cancel()
    cpu_us = (time.process_time() - cpu_start) * 1e6 / max(len(run.samples), 1)
    measured = run.samples.window(settings.warmup, end)
    measured.intended = (np.asarray(measured.intended) - settings.warmup).tolist()
    return summarise(measured, settings.duration, settings.rate, cpu_us), measured
