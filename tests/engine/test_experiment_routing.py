"""A/B experiments on the real server: arms route to their model versions, sticky per user,
segment-targeted, and every response names its arm."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import models_pb2, models_pb2_grpc

from clients import ReachRankClient
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.version_helpers import add_version


@pytest.fixture(scope="module")
def ab_server(
    tmp_path_factory: pytest.TempPathFactory, trained_repo: Path
) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("ab") / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)
    running = start_server(Settings(repo=repo, port=0))
    # Serve version 1 by default; version 2 only through the experiment.
    running.registry.load("ctr", 1)
    yield running
    running.stop(0)


def experiments(server: RunningServer) -> models_pb2_grpc.ExperimentsStub:
    return models_pb2_grpc.ExperimentsStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def test_arms_route_to_their_versions_and_stick(ab_server: RunningServer) -> None:
    stub = experiments(ab_server)
    stub.Set(
        models_pb2.Experiment(
            name="ctr-v2",
            salt="s1",
            rpcs=["rank_ads", "recommend"],
            enabled=True,
            variants=[
                models_pb2.Variant(name="control", weight=1, ctr_version=1),
                models_pb2.Variant(name="treatment", weight=1, ctr_version=2),
            ],
        )
    )
    seen: dict[str, str] = {}
    arms = Counter()
    with ReachRankClient(f"127.0.0.1:{ab_server.port}") as client:
        for i in range(120):
            user = f"u{i}"
            auction = client.rank_ads(user, [{"ad_id": "i1", "bid": 1.0}])
            assert auction.experiment == "ctr-v2"
            expected_version = {"control": 1, "treatment": 2}[auction.variant]
            assert auction.models[0].version == expected_version
            seen[user] = auction.variant
            arms[auction.variant] += 1
        for user, variant in list(seen.items())[:30]:  # sticky: the same arm every time
            assert client.recommend(user, k=2).variant == variant
            assert client.rank_ads(user, [{"ad_id": "i1", "bid": 1.0}]).variant == variant
    assert arms["control"] > 30 and arms["treatment"] > 30
    stub.Delete(models_pb2.DeleteExperimentRequest(name="ctr-v2"))
    with ReachRankClient(f"127.0.0.1:{ab_server.port}") as client:
        plain = client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}])
    assert (plain.experiment, plain.variant, plain.models[0].version) == ("", "", 1)


def test_segment_targeting(ab_server: RunningServer) -> None:
    profiles = ab_server.registry.get("profiles")
    segment = profiles.segments[0]
    inside = next(u for u in profiles.user_ids if profiles.segment_of(u)[0] == segment)
    outside = next(u for u in profiles.user_ids if profiles.segment_of(u)[0] != segment)
    stub = experiments(ab_server)
    stub.Set(
        models_pb2.Experiment(
            name="targeted",
            rpcs=["recommend"],
            enabled=True,
            segments=[segment],
            variants=[models_pb2.Variant(name="only", weight=1, ctr_version=2)],
        )
    )
    try:
        with ReachRankClient(f"127.0.0.1:{ab_server.port}") as client:
            assert client.recommend(inside, k=2).variant == "only"
            assert client.recommend(outside, k=2).variant == ""
            assert client.recommend("never-seen", k=2).variant == ""
    finally:
        stub.Delete(models_pb2.DeleteExperimentRequest(name="targeted"))


def test_experiment_with_unknown_model_or_version_is_refused(ab_server: RunningServer) -> None:
    stub = experiments(ab_server)
    for variant, field in (
        (models_pb2.Variant(name="a", weight=1, ctr_model="nope"), "variants[0].ctr_model"),
        (models_pb2.Variant(name="a", weight=1, ctr_version=99), "variants[0].ctr_model"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.Set(
                models_pb2.Experiment(
                    name="bad", rpcs=["recommend"], enabled=True, variants=[variant]
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    assert not stub.List(models_pb2.ListExperimentsRequest()).experiments
