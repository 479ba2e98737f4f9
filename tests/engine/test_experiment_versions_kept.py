"""A Load or hot reload that replaces the serving version keeps the versions a running
experiment routes to: their users keep getting that version's answers, never NOT_FOUND."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import models_pb2, models_pb2_grpc

from clients import ReachRankClient
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.version_helpers import add_version

ADS = [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 1.0}]


@pytest.fixture
def server(tmp_path: Path, trained_repo: Path) -> Iterator[RunningServer]:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)
    running = start_server(Settings(repo=repo, port=0))
    running.registry.load("ctr", 1)  # version 1 serves; version 2 only through the arm
    yield running
    running.stop(0)


def test_a_load_that_pins_another_version_keeps_the_arms_version(server: RunningServer) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    models_pb2_grpc.ExperimentsStub(channel).Set(
        models_pb2.Experiment(
            name="keep",
            salt="k",
            rpcs=["rank_ads"],
            enabled=True,
            variants=[
                models_pb2.Variant(name="control", weight=1, ctr_version=1),
                models_pb2.Variant(name="treatment", weight=1, ctr_version=2),
            ],
        )
    )
    with ReachRankClient(f"127.0.0.1:{server.port}") as client:
        answers = {f"u{i}": client.rank_ads(f"u{i}", ADS) for i in range(40)}
        control = [u for u, a in answers.items() if a.variant == "control"]
        assert control and all(answers[u].models[0].version == 1 for u in control)
        # The operator pins version 2 for everyone else (the model service's Load).
        models_pb2_grpc.ModelServiceStub(channel).Load(
            models_pb2.LoadModelRequest(name="ctr", version=2)
        )
        assert server.registry.find("ctr").id.version == 2
        for user in control:
            again = client.rank_ads(user, ADS)
            assert (again.variant, again.models[0].version) == ("control", 1)
            # Version 1's own scores (version 2's differ by a known factor).
            assert [a.pctr for a in again.ads] == [a.pctr for a in answers[user].ads]
        # Without the experiment, the pinned version 2 answers.
        models_pb2_grpc.ExperimentsStub(channel).Delete(
            models_pb2.DeleteExperimentRequest(name="keep")
        )
        assert client.rank_ads(control[0], ADS).models[0].version == 2
    channel.close()
