"""A multi-replica bed on one machine: a real ``redis-server`` on a free loopback port and N
``reachrank serve`` processes sharing it (``--state-store redis://...``), each with its own port,
feedback log and metrics port. The replica tests (tests/engine/test_replicas.py) and
``bench.replicas`` drive it through the SDK, round-robin over the replicas.

Start-up waits on events, not time: Redis's "Ready to accept connections" log line, and each
replica's gRPC health answer (``wait_ready``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from clients import ReachRankClient

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Debian's redis-server on 127.0.0.1, persisting to an append-only file in ``directory``
    (a restart keeps what it had; SIGTERM flushes it)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: `make test` installs it (apt-get)")
        self.directory, self.port = directory, port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--dir", str(self.directory), "--protected-mode", "no"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:  # blocks until Redis says it listens (or exits)
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server on port {self.port} exited at start")
        # Keep draining its log so it never blocks on a full pipe.
        stdout = self.process.stdout
        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


class Replica:
    def __init__(self, repo: Path, directory: Path, state_url: str, *args: str) -> None:
        self.repo, self.directory, self.state_url, self.args = repo, directory, state_url, args
        self.port, self.metrics_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> None:
        command = [sys.executable, "-c", "from clients.cli import main; main()", "serve"]
        command += ["--repo", str(self.repo), "--port", str(self.port)]
        command += ["--metrics-port", str(self.metrics_port)]
        command += ["--feedback-dir", str(self.directory / "feedback")]
        command += ["--state-store", self.state_url, *self.args]
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")])}
        with open(self.directory / "serve.log", "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=log)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> None:
        with ReachRankClient(self.target) as client:
            client.wait_ready(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no drain, no flush; the feedback log's WAL holds what was acknowledged."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def metric(self, name: str) -> float:
        """Sum of a Prometheus counter/gauge's samples on this replica's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


class ReplicaBed:
    """Redis + ``n`` replicas of ``repo`` under ``directory``; a context manager."""

    def __init__(self, repo: Path, directory: Path, n: int = 3, *args: str) -> None:
        self.redis = RedisServer(directory / "redis")
        self.replicas = [
            Replica(repo, directory / f"replica-{i}", self.redis.url, *args) for i in range(n)
        ]

    @property
    def targets(self) -> list[str]:
        return [r.target for r in self.replicas]

    def __enter__(self) -> ReplicaBed:
        self.redis.start()
        try:
            for r in self.replicas:  # start all, then wait: they load in parallel
                r.start(wait=False)
            for r in self.replicas:
                r.wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for r in self.replicas:
            r.stop()
        self.redis.stop()
