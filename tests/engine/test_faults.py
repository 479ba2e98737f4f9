"""Faults while serving: a version directory deleted under the server, SIGTERM under load."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from clients import ClientOptions, ReachRankClient
from clients.errors import ReachRankError
from engine.server import start_server
from engine.settings import Settings
from tests.engine.version_helpers import add_version
from tests.threads import Workers


def test_deleted_version_directory_keeps_serving_then_rolls_back(
    tmp_path: Path, trained_repo: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "retrieval", 2)
    running = start_server(Settings(repo=repo, port=0))
    try:
        assert running.registry.get("retrieval").id.version == 2
        shutil.rmtree(repo / "retrieval" / "2")  # embeddings are memory-mapped: still readable
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            for user in ("u1", "u2", "u3"):
                assert client.recommend(user, k=5).models[0].version == 2
            # The next repository poll sees version 2 gone and serves the newest one left.
            assert running.registry.refresh() == ["retrieval"]
            assert client.recommend("u1", k=5).models[0].version == 1
            shutil.rmtree(repo / "retrieval")  # every version gone: keep what is in memory
            assert running.registry.refresh() == []
            assert client.recommend("u1", k=5).items
    finally:
        running.stop(0)


def test_drain_lets_in_flight_calls_finish_and_refuses_new_ones(trained_repo: Path) -> None:
    """What SIGTERM does (`RunningServer.stop`): health NOT_SERVING, new calls refused, calls
    already inside the server finish within the grace period."""
    # More handler threads than held calls: the late call needs one to be refused.
    running = start_server(Settings(repo=trained_repo, port=0, grace_period_s=10, grpc_threads=8))
    ctr = running.registry.get("ctr")
    inside, release = threading.Semaphore(0), threading.Event()
    real_score = ctr.score  # RankAds scores pCTR (and pCVR) through CTRModel.score

    def held_score(cat, num):
        inside.release()
        assert release.wait(120), "the test never released the held calls"
        return real_score(cat, num)

    ctr.score = held_score
    outcomes: list[str] = []

    def call() -> None:
        with ReachRankClient(
            f"127.0.0.1:{running.port}", ClientOptions(max_attempts=1, timeout=30)
        ) as client:
            try:
                client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 2.0}])
                outcomes.append("OK")
            except ReachRankError as exc:
                outcomes.append(exc.code.name)

    workers = Workers()
    for _ in range(4):
        workers.start(call)
    for _ in range(4):
        assert inside.acquire(timeout=120)  # all four are inside the model
    stopper = Workers()
    stopper.start(running.stop)
    deadline = time.monotonic() + 120
    while not running.drain._draining:  # until the drain gate is shut (no event to wait on)
        assert time.monotonic() < deadline, "the server never started draining"
        time.sleep(0.005)
    with ReachRankClient(
        f"127.0.0.1:{running.port}", ClientOptions(max_attempts=1, timeout=5)
    ) as client:
        try:
            client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}])
            late = "OK"
        except ReachRankError as exc:
            late = exc.code.name
    release.set()
    workers.join()
    stopper.join()
    assert outcomes == ["OK"] * 4  # every in-flight call finished on the draining server
    assert late == "UNAVAILABLE"  # a new call during the drain is refused, safe to retry
