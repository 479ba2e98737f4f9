"""Scale-out: `serve --workers 2` shares one port across processes, and the client's
round-robin spreads calls over two independent server processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import ranking_pb2, ranking_pb2_grpc

from clients import ReachRankClient
from tests.engine.version_helpers import add_version, unscaled

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    repo: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    command = [sys.executable, "-c", "from clients.cli import main; main()", "serve"]
    command += ["--repo", str(repo), "--port", str(port), "--metrics-port", "-1", *args]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stderr=subprocess.DEVNULL
    )
    try:
        with ReachRankClient(f"127.0.0.1:{port}") as client:
            client.wait_ready(timeout=180)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def test_workers_share_one_port(trained_repo: Path) -> None:
    port = free_port()
    with serve(trained_repo, port, "--workers", "2") as parent:
        served_by = set()
        # The kernel spreads connections (not calls) over the workers: use many channels,
        # until both answered (the second worker may still be loading when the first is up).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ranking_pb2_grpc.RankingStub(channel)
                reply, call = stub.Recommend.with_call(
                    ranking_pb2.RecommendRequest(user_id="u1", k=3), timeout=60
                )
                assert reply.items
                served_by.add(dict(call.trailing_metadata())["x-served-by"])
            if len(served_by) == 2:
                break
        assert len(served_by) == 2, served_by
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0  # workers drained and exited cleanly


def test_client_round_robin_over_two_servers(tmp_path: Path, trained_repo: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)
    ports = free_port(), free_port()
    pins = [{"REACHRANK_VERSION_POLICIES": json.dumps({"ctr": f"pinned:{v}"})} for v in (1, 2)]
    with (
        serve(repo, ports[0], env=pins[0]),
        serve(repo, ports[1], env=pins[1]),
        ReachRankClient([f"127.0.0.1:{p}" for p in ports]) as client,
    ):
        answers = [client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}]) for _ in range(20)]
    versions = [a.models[0].version for a in answers]
    # Each server answers with its own pinned version (version 2 scores half of version 1's
    # pCTR): both took a share of the calls, each scored by the version it names.
    assert set(versions) == {1, 2}
    v1 = next(a.ads[0].pctr for a in answers if a.models[0].version == 1)
    for a in answers:
        assert unscaled(a.ads[0].pctr, a.models[0].version) == pytest.approx(v1, rel=1e-5)
    assert min(versions.count(1), versions.count(2)) >= 5


def test_workers_split_the_cores_between_their_inference_threads(monkeypatch) -> None:
    from engine.settings import Settings
    from engine.workers import worker_settings

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    split = worker_settings(Settings(workers=4), 0, 5000)
    assert split.ort_intra_op_threads == 2 and split.workers == 1 and split.so_reuseport
    assert worker_settings(Settings(workers=16), 0, 5000).ort_intra_op_threads == 1
    # A count the operator set is theirs to keep.
    assert (
        worker_settings(Settings(workers=4, ort_intra_op_threads=3), 0, 1).ort_intra_op_threads == 3
    )
