"""Per model version inference statistics in Triton's terms (counts and nanosecond totals),
accumulated by ModelInfer from many threads and read by ModelStatistics and perf_analyzer."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field

from reachrank.kserve.v2 import grpc_service_pb2 as pb


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class BatchStats:
    """Execution phases of the requests that carried one batch size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class ModelStats:
    """Triton's ModelStatistics fields, counted per request. Two differences from Triton,
    both because the dynamic batcher (engine.batching) reports per batch, not per request:
    ``compute_infer`` is the whole ``model.run`` call, including any wait in the batcher's
    queue, so ``queue`` stays at 0 ns; and ``execution_count`` counts requests even when the
    batcher merged several into one onnxruntime run. Time a request waits for a free gRPC
    thread happens before the handler and is in neither."""

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)

    @property
    def compute(self) -> BatchStats:
        """Phase totals over every batch size."""
        total = BatchStats()
        for batch in self.batches.values():
            for phase in ("compute_input", "compute_infer", "compute_output"):
                mine, theirs = getattr(total, phase), getattr(batch, phase)
                mine.count += theirs.count
                mine.ns += theirs.ns
        return total


@dataclass(frozen=True)
class Timing:
    """Nanoseconds one successful request spent in each phase, and in all."""

    batch_size: int
    input_ns: int
    infer_ns: int
    output_ns: int
    total_ns: int


class StatsRecorder:
    """Thread-safe accumulator keyed by (model name, version)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, int], ModelStats] = {}

    def _entry(self, name: str, version: int) -> ModelStats:
        return self._stats.setdefault((name, version), ModelStats())

    def success(self, name: str, version: int, timing: Timing) -> None:
        with self._lock:
            s = self._entry(name, version)
            s.last_inference_ms = time.time_ns() // 1_000_000
            s.inference_count += timing.batch_size
            s.execution_count += 1
            s.success.add(timing.total_ns)
            s.queue.add(0)
            batch = s.batches.setdefault(timing.batch_size, BatchStats())
            batch.compute_input.add(timing.input_ns)
            batch.compute_infer.add(timing.infer_ns)
            batch.compute_output.add(timing.output_ns)

    def failure(self, name: str, version: int, total_ns: int) -> None:
        with self._lock:
            s = self._entry(name, version)
            s.last_inference_ms = time.time_ns() // 1_000_000
            s.fail.add(total_ns)

    def snapshot(self, name: str, version: int) -> ModelStats:
        """A consistent copy (zeros for a version that has served nothing yet)."""
        with self._lock:
            return copy.deepcopy(self._stats.get((name, version), ModelStats()))


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_message(name: str, version: int, stats: ModelStats) -> pb.ModelStatistics:
    compute = stats.compute
    return pb.ModelStatistics(
        name=name,
        version=str(version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(compute.compute_input),
            compute_infer=_duration(compute.compute_infer),
            compute_output=_duration(compute.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(stats.batches.items())
        ],
    )
