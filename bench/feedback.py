"""Feedback-log throughput: appends/s and events/s with 1 and 16 appending threads (group
commit), against one fsync per append, and LogEvents over gRPC on loopback.

    python -m bench.feedback [--seconds 2] [--repeats 3] [--dir DIR]

Prints a table and writes bench/results/feedback.json. The log directory must be on the disk
being measured (tmpfs makes fsync free); the default is a temporary directory under --dir.
Shared disks drift, so the cases run round-robin ``--repeats`` times and each row is the run
with the median appends/s.
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
from dataclasses import dataclass
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


@dataclass
class Run:
    """Calls made by all threads, wall time, and each call's latency in seconds."""

    calls: int
    elapsed: float
    latencies: list[float]

    def row(
        self, case: str, threads: int, batch: int, interval_ms: float, per_fsync: float | None
    ) -> dict[str, object]:
        ordered = sorted(self.latencies)
        return {
            "case": case,
            "threads": threads,
            "events_per_append": batch,
            "fsync_interval_ms": interval_ms,
            "appends_per_s": self.calls / self.elapsed,
            "events_per_s": self.calls * batch / self.elapsed,
            "appends_per_fsync": per_fsync,
            "p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)],
        }


def run_threads(threads: int, seconds: float, work: Callable[[], object]) -> Run:
    """Call ``work`` from ``threads`` threads until ``seconds`` pass."""
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(t: int) -> None:
        while (start := time.perf_counter()) < stop:
            work()
            latencies[t].append(time.perf_counter() - start)

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flat = [x for per_thread in latencies for x in per_thread]
    return Run(len(flat), time.perf_counter() - start, flat)


def bench_log(
    root: Path, threads: int, batch: int, interval_ms: float, seconds: float
) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(dir=root))
    events = make_events(batch)
    with FeedbackLog(directory, fsync_interval_ms=interval_ms) as log:
        run = run_threads(threads, seconds, lambda: log.append(events))
        stats = log.stats()
    shutil.rmtree(directory)
    per_fsync = stats.appends / max(stats.fsyncs, 1)
    return run.row("FeedbackLog.append", threads, batch, interval_ms, per_fsync)


def bench_naive(root: Path, batch: int, seconds: float) -> dict[str, object]:
    """The baseline group commit is measured against: write + fsync per append, one thread."""
    path = Path(tempfile.mkdtemp(dir=root)) / "naive.log"
    data = frame_all(e.SerializeToString() for e in make_events(batch))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append() -> None:
        os.write(fd, data)
        os.fsync(fd)

    run = run_threads(1, seconds, append)
    os.close(fd)
    shutil.rmtree(path.parent)
    return run.row("write+fsync per append", 1, batch, 0.0, 1.0)


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
        run = run_threads(in_flight, seconds, lambda: stub.LogEvents(request, timeout=30))
    running.stop(1.0)
    shutil.rmtree(directory)
    return run.row("LogEvents over gRPC", in_flight, batch, 0.0, None)


def filesystem(path: Path) -> str:
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True).stdout
    return out.splitlines()[-1].split()[1] if out else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-feedback-", dir=args.dir))
    seconds = args.seconds
    cases: list[Callable[[], dict[str, object]]] = [lambda: bench_naive(root, 1, seconds)]
    for threads, batch, wait in ((1, 1, 0.0), (1, 100, 0.0), (16, 1, 0.0), (16, 100, 0.0)):
        cases.append(lambda t=threads, b=batch, w=wait: bench_log(root, t, b, w, seconds))
    cases.append(lambda: bench_log(root, 16, 1, 2.0, seconds))
    for in_flight in (1, 16):
        cases.append(lambda n=in_flight: bench_grpc(root, n, 10, seconds))
    runs: list[list[dict[str, object]]] = [[] for _ in cases]
    with futures.ThreadPoolExecutor(1) as pool:  # the server's threads stay out of this one
        for _ in range(args.repeats):
            for i, case in enumerate(cases):
                # Write back what the previous case left dirty (its Parquet, its deleted
                # files): on ext4 an fsync also waits for other files' journalled changes.
                os.sync()
                runs[i].append(pool.submit(case).result())
    shutil.rmtree(root)
    rows = [sorted(r, key=lambda row: row["appends_per_s"])[len(r) // 2] for r in runs]
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
        "seconds_per_run": seconds,
        "repeats": args.repeats,
    }
    RESULTS.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
