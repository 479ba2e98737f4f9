"""`reachrank serve --feedback-dir` as a real process: SIGKILL right after acknowledgements
loses none of them, and SIGTERM lets in-flight LogEvents finish and flushes the log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc

from engine.feedback.records import scan
from engine.feedback.segments import segments
from tests.engine.feedback_helpers import event, logged_user_ids, parquet_events

ROOT = Path(__file__).resolve().parents[2]
_PORT = re.compile(r"ReachRank serving .* on [\d.]+:(\d+)")
START_TIMEOUT_S = 120


@contextmanager
def serve(
    repo: Path, feedback: Path, log_args: Sequence[str] = (), **env: str
) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run the CLI from this checkout; yield the process and its address once SERVING. The
    server's log lines collect in ``process.log_lines`` as it writes them."""
    command = [sys.executable, "-c", "from clients.cli import main; main()", "serve"]
    command += [
        "--repo",
        str(repo),
        "--port",
        "0",
        "--feedback-dir",
        str(feedback),
        "--metrics-port",
        "0",
        *log_args,
    ]
    # This checkout's packages and its generated code (proto/), whatever the venv installed.
    path = os.pathsep.join([str(ROOT), str(ROOT / "proto")])
    environment = {**os.environ, "PYTHONPATH": path, **env}
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stderr=subprocess.PIPE, text=True
    )
    try:
        address = f"127.0.0.1:{_bound_port(process)}"
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(
                health_pb2.HealthCheckRequest(), timeout=START_TIMEOUT_S, wait_for_ready=True
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        yield process, address
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _bound_port(process: subprocess.Popen) -> int:
    """The port from the server's start-up log line; the rest of the log keeps draining into
    ``process.log_lines`` (complete once ``process.log_reader`` has ended)."""
    assert process.stderr is not None
    lines: list[str] = []
    process.log_lines = lines  # type: ignore[attr-defined]
    for line in process.stderr:
        lines.append(line)
        match = _PORT.search(line)
        if match:
            reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
            reader.start()
            process.log_reader = reader  # type: ignore[attr-defined]  # joined: log complete
            return int(match.group(1))
    raise AssertionError("server exited before serving:\n" + "".join(lines))


def _send(address: str, ids: list[int]) -> list[str]:
    """Log one event per id in calls of five; returns the user ids acknowledged."""
    acked: list[str] = []
    with grpc.insecure_channel(address) as channel:
        stub = feedback_pb2_grpc.FeedbackStub(channel)
        for start in range(0, len(ids), 5):
            batch = [event(i, context={"device": "web"}) for i in ids[start : start + 5]]
            reply = stub.LogEvents(feedback_pb2.LogEventsRequest(events=batch), timeout=30)
            assert reply.accepted == len(batch)
            acked += [e.user_id for e in batch]
    return acked


def test_sigkill_after_acks_loses_no_acknowledged_event(trained_repo: Path, tmp_path: Path) -> None:
    feedback = tmp_path / "feedback"
    with serve(trained_repo, feedback) as (process, address):
        with futures.ThreadPoolExecutor(8) as pool:
            batches = [list(range(t * 1000, t * 1000 + 40)) for t in range(8)]
            acked = [u for done in pool.map(_send, [address] * 8, batches) for u in done]
        process.send_signal(signal.SIGKILL)  # no flush, no seal: only fsynced bytes survive
        process.wait(timeout=30)
    assert len(acked) == 320
    assert sorted(set(_wal_ids(feedback))) == sorted(acked)  # all still in the WAL
    # A restarted server recovers the WAL, keeps logging, and seals everything on SIGTERM.
    with serve(trained_repo, feedback) as (process, address):
        more = _send(address, list(range(9000, 9010)))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert segments(feedback) == {}
    logged = logged_user_ids(feedback)
    assert sorted(logged) == sorted(acked + more)  # each once, nothing corrupt (no drops)


def _wal_ids(feedback: Path) -> list[str]:
    ids: list[str] = []
    for path in segments(feedback).values():
        found = scan(path.read_bytes())
        assert found.clean, found.problem
        ids += [feedback_pb2.FeedbackEvent.FromString(p).user_id for p in found.payloads]
    return ids


def test_sigterm_lets_in_flight_log_events_finish_and_flushes(
    trained_repo: Path, tmp_path: Path
) -> None:
    feedback = tmp_path / "feedback"
    # A long fsync wait keeps the calls in flight (written, not yet acknowledged) at SIGTERM.
    with serve(trained_repo, feedback, REACHRANK_FEEDBACK_FSYNC_INTERVAL_MS="1500") as (
        process,
        address,
    ):
        with futures.ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(_send, address, [t * 10 + j for j in range(5)]) for t in range(4)]
            _wait_for_records(feedback, 20)
            process.send_signal(signal.SIGTERM)
            acked = [u for call in calls for u in call.result(timeout=60)]
        assert process.wait(timeout=60) == 0
    assert len(acked) == 20
    assert sorted(parquet_events(feedback)["user_id"]) == sorted(acked)
    assert segments(feedback) == {}


def _wait_for_records(feedback: Path, n: int, timeout_s: float = 60) -> None:
    """Until the server has written ``n`` records into its current segment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(len(scan(p.read_bytes()).payloads) for p in segments(feedback).values()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"the server never wrote {n} records")
