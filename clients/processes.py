"""Run one load across several generator processes, for when one core cannot drive enough.

A Python generator process tops out at 10-18k calls/s (grpc.aio's per-call cost, see
BENCHMARKS.md). Each process here runs the ordinary `run_load` on its own channel with a
share of the concurrency or rate; the parent merges their samples into one summary and their
live progress into one line. Independent Poisson streams add up to a Poisson stream of the
total rate; constant-rate streams are phase-shifted so that they interleave.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import queue
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from clients.channel import base_metadata, open_aio_channel
from clients.latency import Samples, Summary, summarise
from clients.loadtest import LoadSettings, Progress, run_load
from clients.options import ClientOptions
from clients.workload import Workload

# How long the parent waits for a child's result after the load should have ended.
_RESULT_GRACE_S = 60.0
# How long connected processes wait for the others before giving up.
_START_TIMEOUT_S = 60.0


def shares(settings: LoadSettings, processes: int) -> list[LoadSettings]:
    """Each process's part of the load: concurrency or rate split evenly, distinct seeds."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    parts = []
    for index in range(processes):
        seed = settings.seed + index
        if settings.rate is not None:
            parts.append(
                dataclasses.replace(
                    settings,
                    rate=settings.rate / processes,
                    # Interleave constant streams: process i starts i/rate seconds late.
                    phase=settings.phase + index / settings.rate,
                    max_in_flight=max(1, settings.max_in_flight // processes),
                    seed=seed,
                )
            )
        elif settings.concurrency is not None:
            if settings.concurrency < processes:
                raise ValueError(
                    f"concurrency {settings.concurrency} cannot be split over {processes} processes"
                )
            extra = index < settings.concurrency % processes
            concurrency = settings.concurrency // processes + extra
            parts.append(dataclasses.replace(settings, concurrency=concurrency, seed=seed))
    return parts


def merge(
    results: list[tuple[Summary, Samples]], settings: LoadSettings
) -> tuple[Summary, Samples]:
    """One summary over every process's measured samples."""
    merged = Samples()
    cpu_us = 0.0
    for summary, samples in results:
        merged.intended += samples.intended
        merged.latency += samples.latency
        merged.status += samples.status
        cpu_us += (summary.client_cpu_us_per_request or 0.0) * summary.requests
    cpu_per_request = cpu_us / max(len(merged), 1)
    return summarise(merged, settings.duration, settings.rate, cpu_per_request), merged


def _child(
    index: int,
    target: str,
    options: ClientOptions,
    workload: Workload,
    settings: LoadSettings,
    messages: Queue,
    start: Barrier,
) -> None:
    """A generator process: runs its share and sends progress, then its result."""

    async def drive() -> tuple[Summary, Samples]:
        channel = open_aio_channel(target, options)
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=options.timeout)
            # Every process connected: start the clocks together so that the measured
            # windows coincide (spawning takes a second or more on a busy machine).
            await asyncio.to_thread(start.wait, _START_TIMEOUT_S)
            return await run_load(
                channel,
                workload,
                settings,
                base_metadata(options),
                lambda progress: messages.put(("progress", index, progress)),
            )
        finally:
            await channel.close()

    try:
        messages.put(("result", index, asyncio.run(drive())))
    except BaseException as error:  # report every failure; the parent raises it
        messages.put(("error", index, f"{type(error).__name__}: {error}"))


def _combined(latest: dict[int, Progress]) -> Progress:
    return Progress(
        elapsed=max(p.elapsed for p in latest.values()),
        completed=sum(p.completed for p in latest.values()),
        rate=sum(p.rate for p in latest.values()),
        errors=sum(p.errors for p in latest.values()),
        # The worst process's p99: an upper bound of the merged one.
        p99_ms=max(p.p99_ms for p in latest.values()),
        in_flight=sum(p.in_flight for p in latest.values()),
    )


def run_in_processes(
    target: str,
    options: ClientOptions,
    workload: Workload,
    settings: LoadSettings,
    processes: int,
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[Summary, Samples]:
    """Run `settings` split over `processes` generator processes and merge the outcome."""
    # spawn, not fork: gRPC's threads do not survive a fork.
    context = multiprocessing.get_context("spawn")
    messages: Queue[Any] = context.Queue()
    start = context.Barrier(processes)
    children = [
        context.Process(
            target=_child,
            args=(index, target, options, workload, share, messages, start),
            daemon=True,
        )
        for index, share in enumerate(shares(settings, processes))
    ]
    for child in children:
        child.start()
    results: dict[int, tuple[Summary, Samples]] = {}
    latest: dict[int, Progress] = {}
    reports = [0] * processes
    rounds = 0
    deadline_s = settings.warmup + settings.duration + settings.timeout + _RESULT_GRACE_S
    try:
        while len(results) < processes:
            try:
                kind, index, payload = messages.get(timeout=deadline_s)
            except queue.Empty:
                raise RuntimeError("a generator process stopped answering") from None
            if kind == "error":
                raise RuntimeError(f"generator process {index} failed: {payload}")
            if kind == "result":
                results[index] = payload
            else:
                latest[index] = payload
                reports[index] += 1
                # One line per round: once every process has reported once more.
                if on_progress and min(reports) > rounds:
                    rounds = min(reports)
                    on_progress(_combined(latest))
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
    return merge([results[index] for index in range(processes)], settings)
