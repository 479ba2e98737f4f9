"""Guarded rollout on a real server: a variant serving a wrong model version whose feedback is
much worse is stopped by its CTR guardrail, the stop is persisted in the experiments file and
shown by List, and its users are served by the control; an equal variant runs on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from reachrank.v1 import models_pb2, models_pb2_grpc

from clients import FeedbackEvent, ReachRankClient
from engine.experiment_file import ExperimentFile
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.version_helpers import add_version

ADS = [{"ad_id": f"i{i}", "bid": 1.0 + i / 10} for i in range(5)]
STOPPED = models_pb2.VARIANT_STATE_STOPPED


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, trained_repo: Path
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("guardrails")
    repo = root / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)  # its scores are half of version 1's: wrong
    running = start_server(
        Settings(
            repo=repo,
            port=0,
            feedback_dir=root / "feedback",
            experiments_file=root / "experiments.json",
            experiments_poll_interval_s=0,
        )
    )
    running.registry.load("ctr", 1)
    yield running
    running.stop(0)


def _experiment(name: str) -> models_pb2.Experiment:
    return models_pb2.Experiment(
        name=name,
        salt=name,
        rpcs=["rank_ads"],
        enabled=True,
        variants=[
            models_pb2.Variant(name="control", weight=1, ctr_version=1),
            models_pb2.Variant(name="treatment", weight=1, ctr_version=2),
        ],
        guardrails=[models_pb2.Guardrail(metric="ctr", alpha=0.05, min_samples=300)],
    )


def _stub(server: RunningServer) -> models_pb2_grpc.ExperimentsStub:
    return models_pb2_grpc.ExperimentsStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def _treatment(server: RunningServer, name: str) -> models_pb2.Variant:
    listed = _stub(server).List(models_pb2.ListExperimentsRequest()).experiments
    return next(v for e in listed if e.name == name for v in e.variants if v.name == "treatment")


def _drive(
    client: ReachRankClient,
    name: str,
    users: int,
    ctr: dict[str, float],
    seed: int,
) -> dict[str, str]:
    """Users see the auction's winner and click with their arm's CTR; every 50 users' events
    go to LogEvents naming the arm. Returns each user's first arm."""
    rng = np.random.default_rng(seed)
    arms: dict[str, str] = {}
    events: list[FeedbackEvent] = []
    for i in range(users):
        user = f"{name}-u{i}"
        auction = client.rank_ads(user, ADS, slots=1)
        assert auction.experiment == name
        arms[user] = auction.variant
        winner = auction.ads[0]
        shown = {
            "user_id": user,
            "item_id": winner.ad_id,
            "request_id": auction.request_id,
            "experiment": name,
            "variant": auction.variant,
            "position": 1,
        }
        events.append(FeedbackEvent(event="impression", **shown))
        if rng.random() < ctr[auction.variant]:
            events.append(FeedbackEvent(event="click", **shown))
        if len(events) >= 50 or i == users - 1:
            client.log_events(events)
            events = []
    return arms


def test_a_much_worse_variant_is_stopped_and_its_users_go_to_control(
    guarded: RunningServer,
) -> None:
    _stub(guarded).Set(_experiment("worse"))
    with ReachRankClient(f"127.0.0.1:{guarded.port}", timeout=10) as client:
        arms = _drive(client, "worse", 900, {"control": 0.15, "treatment": 0.04}, seed=7)
        treatment = _treatment(guarded, "worse")
        assert treatment.state == STOPPED
        assert "guardrail ctr" in treatment.stop_reason and "look" in treatment.stop_reason
        assert treatment.stopped_unix_ms > 0
        # Its users are now served by the control's model version, and say so.
        moved = [u for u, arm in arms.items() if arm == "treatment"][:20]
        assert moved
        for user in moved:
            auction = client.rank_ads(user, ADS, slots=1)
            assert (auction.variant, auction.models[0].version) == ("control", 1)
    # Persisted: the file every process and restart reads has the stop.
    on_file = {e.name: e for e in ExperimentFile(guarded.settings.experiments_file).read()}
    assert on_file["worse"].variants[1].state == STOPPED
    assert on_file["worse"].variants[1].stop_reason == treatment.stop_reason


def test_an_equal_variant_is_not_stopped(guarded: RunningServer) -> None:
    _stub(guarded).Set(_experiment("equal"))
    with ReachRankClient(f"127.0.0.1:{guarded.port}", timeout=10) as client:
        arms = _drive(client, "equal", 1300, {"control": 0.1, "treatment": 0.1}, seed=11)
    assert min(list(arms.values()).count(a) for a in ("control", "treatment")) >= 600  # 2 looks
    treatment = _treatment(guarded, "equal")
    assert treatment.state != STOPPED and treatment.stop_reason == ""
    stats = guarded.extras.experiments.guardrails.stats("equal", "treatment")
    assert stats.impressions >= 600
