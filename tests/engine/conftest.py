"""A real ReachRank server on a free 127.0.0.1 port over the trained test repository, and the
real client connected to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clients import ReachRankClient
from engine.server import RunningServer, start_server
from engine.settings import Settings


@pytest.fixture(scope="module")
def server(trained_repo: Path) -> Iterator[RunningServer]:
    running = start_server(
        Settings(repo=trained_repo, host="127.0.0.1", port=0, grace_period_s=1.0)
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[ReachRankClient]:
    with ReachRankClient(f"127.0.0.1:{server.port}") as c:
        c.wait_ready(timeout=30)
        yield c
