"""A/B arms on the real server answer with their own model version's scores and stay with a
user across a restart, across the processes of `serve --workers 2` (one experiments file) and
after a weight change, wherever the new split allows it."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import models_pb2, ranking_pb2, ranking_pb2_grpc

from clients import ReachRankClient
from clients.types import Experiment, Variant
from engine.experiments import assign, buckets
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.test_scale_out import free_port, serve
from tests.engine.version_helpers import add_version, scale

USERS = [f"u{i}" for i in range(120)]
AD = [{"ad_id": "i1", "bid": 1.0}]
VERSION = {"control": 1, "treatment": 2}


def ab(weights: tuple[float, float] = (1.0, 1.0)) -> Experiment:
    return Experiment(
        "ctr-v2",
        (
            Variant("control", weights[0], ctr_version=1),
            Variant("treatment", weights[1], ctr_version=2),
        ),
        rpcs=("rank_ads", "recommend"),
        salt="sticky",
    )


def as_proto(experiment: Experiment) -> models_pb2.Experiment:
    return models_pb2.Experiment(
        name=experiment.name,
        salt=experiment.salt,
        rpcs=list(experiment.rpcs),
        enabled=experiment.enabled,
        variants=[
            models_pb2.Variant(name=v.name, weight=v.weight, ctr_version=v.ctr_version)
            for v in experiment.variants
        ],
    )


@pytest.fixture
def repo(tmp_path: Path, trained_repo: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(trained_repo, copy)
    add_version(copy, "ctr", 2)  # half of version 1's pCTR
    return copy


def start(repo: Path, experiments: Path) -> RunningServer:
    # Version 1 serves; version 2 only through the experiment.
    return start_server(
        Settings(
            repo=repo,
            port=0,
            experiments_file=experiments,
            experiments_poll_interval_s=0,
            version_policies={"ctr": "pinned:1"},
        )
    )


@pytest.fixture
def plain_pctr(repo: Path, tmp_path: Path) -> dict[str, float]:
    """Each user's pCTR for the ad from version 1, before any experiment."""
    running = start(repo, tmp_path / "unused.json")
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            return {u: client.rank_ads(u, AD).ads[0].pctr for u in USERS}
    finally:
        running.stop(0)


def arms(server: RunningServer, plain_pctr: dict[str, float]) -> dict[str, str]:
    """Each user's arm, checking that the arm's version scored the request."""
    found = {}
    with ReachRankClient(f"127.0.0.1:{server.port}") as client:
        for user in USERS:
            auction = client.rank_ads(user, AD)
            version = VERSION[auction.variant]
            assert auction.models[0].version == version
            assert auction.ads[0].pctr == pytest.approx(
                plain_pctr[user] * scale(version), rel=1e-5
            ), f"{user} in {auction.variant} was not scored by version {version}"
            found[user] = auction.variant
    return found


def test_arms_score_with_their_version_and_survive_restart_and_weight_change(
    repo: Path, tmp_path: Path, plain_pctr: dict[str, float]
) -> None:
    path = tmp_path / "experiments.json"
    expected = {u: assign(as_proto(ab()), u) for u in USERS}
    first = start(repo, path)
    try:
        with ReachRankClient(f"127.0.0.1:{first.port}") as client:
            client.set_experiment(ab())
        before = arms(first, plain_pctr)
    finally:
        first.stop(0)
    assert before == expected
    assert 30 < list(before.values()).count("treatment") < 90

    restarted = start(repo, path)
    try:
        assert arms(restarted, plain_pctr) == before  # the file brings every user back
        with ReachRankClient(f"127.0.0.1:{restarted.port}") as client:
            client.set_experiment(ab((1.0, 3.0)))  # treatment grows from 1/2 to 3/4
        after = arms(restarted, plain_pctr)
    finally:
        restarted.stop(0)
    # Growing an arm moves users only into it: nobody leaves treatment, and exactly the
    # control users whose bucket falls in [1/4, 1/2) move over.
    bucket = dict(zip(USERS, buckets("sticky", USERS).tolist(), strict=True))
    for user in USERS:
        if before[user] == "treatment":
            assert after[user] == "treatment", user
        else:
            assert after[user] == ("control" if bucket[user] < 0.25 else "treatment"), user
    assert 0 < sum(before[u] != after[u] for u in USERS) < list(before.values()).count("control")


@pytest.mark.slow
def test_every_worker_process_puts_a_user_in_the_same_arm(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    port = free_port()
    env = {
        "REACHRANK_EXPERIMENTS_FILE": str(path),
        "REACHRANK_EXPERIMENTS_POLL_INTERVAL_S": "0.05",
        "REACHRANK_VERSION_POLICIES": '{"ctr": "pinned:1"}',
    }
    with serve(repo, port, "--workers", "2", env=env):
        with ReachRankClient(f"127.0.0.1:{port}") as client:
            client.set_experiment(ab())  # through one worker; the other adopts it by its poll
        expected = {u: assign(as_proto(ab()), u) for u in USERS}
        seen: dict[str, set[str]] = {}  # worker -> users it answered with the right arm
        # The kernel spreads connections, not calls, over the workers: a channel per round.
        for round_ in range(200):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = ranking_pb2_grpc.RankingStub(channel)
                for user in USERS[round_ % 4 :: 4]:
                    reply, call = stub.RankAds.with_call(
                        ranking_pb2.RankAdsRequest(
                            user_id=user, slots=1, ads=[ranking_pb2.Ad(ad_id="i1", bid=1.0)]
                        ),
                        timeout=60,
                    )
                    worker = dict(call.trailing_metadata())["x-served-by"]
                    if reply.variant == "":
                        break  # this worker has not adopted the experiment yet
                    assert reply.variant == expected[user], (worker, user)
                    assert reply.models[0].version == VERSION[reply.variant]
                    seen.setdefault(worker, set()).add(user)
            if len(seen) == 2 and all(len(users) >= 30 for users in seen.values()):
                break
    assert len(seen) == 2, f"only {sorted(seen)} answered"
    assert all(len(users) >= 30 for users in seen.values())
