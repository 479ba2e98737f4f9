"""ForgetUser under `serve --workers 2`, for real: each worker writes its own feedback log
(`<feedback-dir>/worker-<i>`); the worker that answers erases the user from its log and waits
until its sibling has swept theirs from its own (the tombstone file is the broadcast), so once
the call returns no file of either log holds the user's id (searched byte-wise, Parquet
decompressed). A second call is idempotent."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc

from clients import ClientOptions, ReachRankClient
from tests.engine.privacy_helpers import traces

pytestmark = pytest.mark.slow  # two server processes load the trained repository
ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "forget-worker-subject-7c1d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_once(target: str, user: str) -> str:
    """One LogEvents on a fresh connection (the kernel spreads connections over the workers);
    the worker that wrote it."""
    with grpc.insecure_channel(target) as channel:
        stub = feedback_pb2_grpc.FeedbackStub(channel)
        event = feedback_pb2.FeedbackEvent(user_id=user, item_id="i1", event="click")
        reply, call = stub.LogEvents.with_call(
            feedback_pb2.LogEventsRequest(events=[event]), timeout=60
        )
        assert reply.accepted == 1
        return dict(call.trailing_metadata())["x-served-by"]


def test_forget_user_erases_every_workers_feedback_log(tmp_path: Path, trained_repo: Path) -> None:
    repo, feedback = tmp_path / "repo", tmp_path / "feedback"
    shutil.copytree(trained_repo, repo)
    # (`serve --workers` with a feedback folder that does not exist yet fails at start:
    # engine.live_history.sibling_logs lists its parent; reported, not fixed here.)
    feedback.mkdir()
    port = _free_port()
    target = f"127.0.0.1:{port}"
    command = [sys.executable, "-c", "from clients.cli import main; main()", "serve"]
    command += ["--repo", str(repo), "--port", str(port), "--metrics-port", "-1"]
    command += ["--workers", "2", "--feedback-dir", str(feedback)]
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ), stderr=subprocess.DEVNULL)
    try:
        with ReachRankClient(target, ClientOptions(max_attempts=1)) as client:
            client.wait_ready(timeout=180)
            writers: set[str] = set()
            deadline = time.monotonic() + 180
            while len(writers) < 2 and time.monotonic() < deadline:
                writers.add(_log_once(target, SUBJECT))
                _log_once(target, "someone-else-7c1d")
            assert len(writers) == 2, writers  # both workers logged the user's events
            workers = sorted(feedback.glob("worker-*"))
            assert len(workers) == 2 and all(traces(SUBJECT, [w]) for w in workers)

            erased = client.forget_user(SUBJECT)
            assert erased["feedback_wal"] >= 1  # the answering worker's own log
            assert erased["feedback_workers_swept"] == 1, erased  # and its sibling's
            assert erased["feedback_workers_pending"] == 0
            assert traces(SUBJECT, [feedback]) == []  # in neither log any more
            assert traces("someone-else-7c1d", [feedback])  # other users kept

            again = client.forget_user(SUBJECT)
            assert again["feedback_wal"] == 0 and again["feedback_workers_swept"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Stopped: each log published its WAL to Parquet; still nothing of the user's.
    assert traces(SUBJECT, [feedback]) == []
    audit = (repo / "privacy-audit.jsonl").read_text()
    assert SUBJECT not in audit and "forget_sweep" in audit
