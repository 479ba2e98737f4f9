"""The statistics accumulator: Triton's counting rules, consistency under concurrent updates,
and the ModelStatistics message built from it."""

from __future__ import annotations

from engine.kserve.stats import StatsRecorder, Timing, statistics_message
from tests.threads import Workers


def test_counts_follow_triton_rules() -> None:
    stats = StatsRecorder()
    stats.success(
        "ctr", 1, Timing(batch_size=64, input_ns=10, infer_ns=100, output_ns=5, total_ns=120)
    )
    stats.success("ctr", 1, Timing(batch_size=8, input_ns=2, infer_ns=20, output_ns=1, total_ns=25))
    stats.failure("ctr", 1, total_ns=7)
    s = stats.snapshot("ctr", 1)
    # Inferences count rows; executions count model runs; failures count in neither.
    assert (s.inference_count, s.execution_count) == (72, 2)
    assert (s.success.count, s.success.ns) == (2, 145)
    assert (s.fail.count, s.fail.ns) == (1, 7)
    assert (s.queue.count, s.queue.ns) == (2, 0)
    assert sorted(s.batches) == [8, 64]
    assert (s.batches[64].compute_infer.count, s.batches[64].compute_infer.ns) == (1, 100)
    total = s.compute
    assert (total.compute_input.ns, total.compute_infer.ns, total.compute_output.ns) == (12, 120, 6)
    assert total.compute_infer.count == 2
    assert s.last_inference_ms > 0


def test_versions_and_models_are_kept_apart() -> None:
    stats = StatsRecorder()
    stats.success("ctr", 1, Timing(4, 1, 1, 1, 3))
    stats.success("ctr", 2, Timing(4, 1, 1, 1, 3))
    stats.success("ctr", 2, Timing(4, 1, 1, 1, 3))
    assert stats.snapshot("ctr", 1).execution_count == 1
    assert stats.snapshot("ctr", 2).execution_count == 2
    untouched = stats.snapshot("retrieval", 1)
    assert (untouched.execution_count, untouched.success.count, untouched.last_inference_ms) == (
        0,
        0,
        0,
    )


def test_snapshot_is_a_copy() -> None:
    stats = StatsRecorder()
    stats.success("ctr", 1, Timing(4, 1, 1, 1, 3))
    before = stats.snapshot("ctr", 1)
    stats.success("ctr", 1, Timing(4, 1, 1, 1, 3))
    assert before.execution_count == 1 and before.batches[4].compute_input.count == 1
    assert stats.snapshot("ctr", 1).execution_count == 2


def test_concurrent_updates_lose_nothing() -> None:
    stats = StatsRecorder()
    threads, per_thread = 8, 2000

    def work() -> None:
        for _ in range(per_thread):
            stats.success(
                "ctr", 1, Timing(batch_size=3, input_ns=1, infer_ns=2, output_ns=3, total_ns=6)
            )
            stats.failure("ctr", 1, total_ns=1)

    with Workers() as workers:
        for _ in range(threads):
            workers.start(work)
    s = stats.snapshot("ctr", 1)
    n = threads * per_thread
    assert (s.execution_count, s.inference_count) == (n, 3 * n)
    assert (s.success.count, s.success.ns, s.fail.count, s.fail.ns) == (n, 6 * n, n, n)
    assert s.compute.compute_output.ns == 3 * n


def test_statistics_message() -> None:
    stats = StatsRecorder()
    stats.success(
        "ctr", 3, Timing(batch_size=2, input_ns=10, infer_ns=20, output_ns=30, total_ns=70)
    )
    message = statistics_message("ctr", 3, stats.snapshot("ctr", 3))
    assert (message.name, message.version) == ("ctr", "3")
    assert (message.inference_count, message.execution_count) == (2, 1)
    infer = message.inference_stats
    assert (infer.success.count, infer.success.ns) == (1, 70)
    assert (infer.compute_input.ns, infer.compute_infer.ns, infer.compute_output.ns) == (10, 20, 30)
    assert [(b.batch_size, b.compute_infer.ns) for b in message.batch_stats] == [(2, 20)]
