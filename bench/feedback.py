"""Feedback-log throughput: appends/s and events/s with 1 and 16 appending threads (group
commit), against one fsync per append, and LogEvents over gRPC on loopback.

    python -m bench.feedback [--seconds 3] [--dir DIR]

Prints a table and writes bench/results/feedback.json. The log directory must be on the disk
being measured (tmpfs makes fsync free); the default is a temporary directory under --dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc

from engine.feedback import FeedbackLog
from engine.feedback.records import frame_all

RESULTS = Path(__file__).resolve().parent / "results" / "feedback.json"


def make_events(n: int) -> list[feedback_pb2.FeedbackEvent]:
    """Realistic events: ids, request, variant, position, a context key (~110 bytes each)."""
    return [
        feedback_pb2.FeedbackEvent(
            user_id=f"user-{i:07d}",
            item_id=f"item-{i % 9973:05d}",
            event="impression",
            ts_unix_ms=1_764_000_000_000 + i,
            request_id=f"req-{i // 10:08d}",
            experiment="ranker-v2",
            variant="B",
            model="ctr",
            model_version=3,
            position=i % 10 + 1,
            price=19.99,
            context={"device": "ios"},
        )
        for i in range(n)
    ]


def run_threads(threads: int, seconds: float, work: Callable[[], int]) -> tuple[int, float]:
    """Call ``work`` from ``threads`` threads until ``seconds`` pass; (calls, elapsed)."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(t: int) -> None:
        while time.perf_counter() < stop:
            work()
            counts[t] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts), time.perf_counter() - start


def bench_log(
    root: Path, threads: int, batch: int, interval_ms: float, seconds: float
) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(dir=root))
    events = make_events(batch)
    with FeedbackLog(directory, fsync_interval_ms=interval_ms) as log:
        latencies: list[float] = []

        def append() -> int:
            start = time.perf_counter()
            log.append(events)
            latencies.append(time.perf_counter() - start)
            return batch

        calls, elapsed = run_threads(threads, seconds, append)
        stats = log.stats()
    shutil.rmtree(directory)
    return {
        "case": "FeedbackLog.append",
        "threads": threads,
        "events_per_append": batch,
        "fsync_interval_ms": interval_ms,
        "appends_per_s": calls / elapsed,
        "events_per_s": calls * batch / elapsed,
        "appends_per_fsync": stats.appends / max(stats.fsyncs, 1),
        "p50_ms": 1000 * sorted(latencies)[len(latencies) // 2],
        "p99_ms": 1000 * sorted(latencies)[int(len(latencies) * 0.99)],
    }


def bench_naive(root: Path, batch: int, seconds: float) -> dict[str, object]:
    """The baseline group commit is measured against: write + fsync per append, one thread."""
    path = Path(tempfile.mkdtemp(dir=root)) / "naive.log"
    data = frame_all(e.SerializeToString() for e in make_events(batch))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append() -> int:
        os.write(fd, data)
        os.fsync(fd)
        return batch

    calls, elapsed = run_threads(1, seconds, append)
    os.close(fd)
    shutil.rmtree(path.parent)
    return {
        "case": "write+fsync per append",
        "threads": 1,
        "events_per_append": batch,
        "fsync_interval_ms": 0.0,
        "appends_per_s": calls / elapsed,
        "events_per_s": calls * batch / elapsed,
        "appends_per_fsync": 1.0,
        "p50_ms": None,
        "p99_ms": None,
    }


def bench_grpc(root: Path, in_flight: int, batch: int, seconds: float) -> dict[str, object]:
    """LogEvents through a real in-process server on loopback (no models needed)."""
    from engine.server import start_server
    from engine.settings import Settings

    directory = Path(tempfile.mkdtemp(dir=root))
    running = start_server(
        Settings(repo=directory / "no-models", port=0, feedback_dir=directory / "feedback")
    )
    request = feedback_pb2.LogEventsRequest(events=make_events(batch))
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = feedback_pb2_grpc.FeedbackStub(channel)
        stub.LogEvents(request, timeout=30)

        def call() -> int:
            return stub.LogEvents(request, timeout=30).accepted

        calls, elapsed = run_threads(in_flight, seconds, call)
    running.stop(1.0)
    shutil.rmtree(directory)
    return {
        "case": "LogEvents over gRPC",
        "threads": in_flight,
        "events_per_append": batch,
        "fsync_interval_ms": 0.0,
        "appends_per_s": calls / elapsed,
        "events_per_s": calls * batch / elapsed,
        "appends_per_fsync": None,
        "p50_ms": None,
        "p99_ms": None,
    }


def filesystem(path: Path) -> str:
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True).stdout
    return out.splitlines()[-1].split()[1] if out else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-feedback-", dir=args.dir))
    rows = [bench_naive(root, 1, args.seconds)]
    for threads in (1, 16):
        for batch in (1, 100):
            rows.append(bench_log(root, threads, batch, 0.0, args.seconds))
    rows.append(bench_log(root, 16, 1, 2.0, args.seconds))
    with futures.ThreadPoolExecutor(1) as pool:  # the server's threads stay out of this one
        for in_flight in (1, 16):
            rows.append(pool.submit(bench_grpc, root, in_flight, 10, args.seconds).result())
    shutil.rmtree(root)
    header = f"{'case':<24}{'thr':>4}{'ev/app':>7}{'wait ms':>8}{'appends/s':>11}"
    header += f"{'events/s':>11}{'app/fsync':>10}{'p50 ms':>8}{'p99 ms':>8}"
    print(header)
    for r in rows:
        print(
            f"{r['case']:<24}{r['threads']:>4}{r['events_per_append']:>7}"
            f"{r['fsync_interval_ms']:>8.1f}{r['appends_per_s']:>11,.0f}{r['events_per_s']:>11,.0f}"
            + "".join(
                f"{'-' if r[k] is None else format(r[k], '.1f'):>{w}}"
                for k, w in (("appends_per_fsync", 10), ("p50_ms", 8), ("p99_ms", 8))
            )
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "filesystem": filesystem(args.dir),
    }
    RESULTS.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
