"""Feedback, model management and experiments through the sync client."""

from __future__ import annotations

import grpc
import pytest

from clients import (
    Experiment,
    FeedbackEvent,
    ReachRankClient,
    ReachRankError,
    Variant,
)

from .conftest import FakeServer


@pytest.fixture
def client(fake_server: FakeServer):
    with ReachRankClient(fake_server.target, timeout=5.0, initial_backoff=0.01) as sdk:
        yield sdk


def test_recommendation_carries_request_id_and_variant(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    rec = client.recommend("u1", 3)
    assert (rec.experiment, rec.variant) == ("exp1", "control")
    assert rec.request_id == fake_server.servicer.calls[-1].metadata["x-request-id"]
    auction = client.rank_ads("u1", [{"ad_id": "a", "bid": 1.0}], request_id="mine")
    assert (auction.request_id, auction.variant) == ("mine", "control")


def test_feedback_loop_from_a_recommendation(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    rec = client.recommend("u1", 3)
    impressions = rec.feedback("u1", "impression")
    clicks = rec.feedback("u1", "click", item_ids=["i2"])
    assert client.log_events([*impressions, *clicks]) == 4
    logged = fake_server.feedback.events
    assert [(e.item_id, e.event, e.position) for e in logged] == [
        ("i0", "impression", 1), ("i1", "impression", 2), ("i2", "impression", 3), ("i2", "click", 3),
    ]  # fmt: skip
    assert {e.request_id for e in logged} == {rec.request_id}
    assert {(e.model, e.model_version, e.experiment, e.variant) for e in logged} == {
        ("ctr", 3, "exp1", "control")
    }
    assert logged[2].price == 12.0


def test_feedback_from_an_auction_covers_winners(client: ReachRankClient) -> None:
    auction = client.rank_ads(
        "u1", [{"ad_id": "a", "bid": 1.0}, {"ad_id": "b", "bid": 2.0}], slots=1
    )
    [event] = auction.feedback("u1", "impression")
    assert (event.item_id, event.position, event.price) == ("b", 1, 1.0)


def test_log_events_accepts_dicts_and_context(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    accepted = client.log_events(
        [
            {
                "user_id": "u1",
                "item_id": "i1",
                "event": "purchase",
                "value": 9.5,
                "context": {"device": 1},
            }
        ]
    )
    assert accepted == 1
    event = fake_server.feedback.events[0]
    assert (event.event, event.value, dict(event.context)) == ("purchase", 9.5, {"device": "1"})


def test_log_events_is_never_retried(client: ReachRankClient, fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 1
    with pytest.raises(ReachRankError) as caught:
        client.log_events([FeedbackEvent("u1", "i1", "click")])
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(fake_server.servicer.calls) == 1
    assert fake_server.feedback.events == []


def test_model_management(client: ReachRankClient, fake_server: FakeServer) -> None:
    models = {status.name: status for status in client.models()}
    assert set(models) == {"ctr", "retrieval"}
    assert models["ctr"].available_versions == (1, 2)
    assert (models["ctr"].state, models["ctr"].policy) == ("SERVING", "latest")
    pinned = client.load_model("ctr", 1)
    assert (pinned.version, pinned.policy) == (1, "pinned:1")
    unloaded = client.unload_model("retrieval")
    assert (unloaded.state, unloaded.version, unloaded.loaded_versions) == ("UNLOADED", 0, ())


def test_admin_reads_are_retried(client: ReachRankClient, fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 1
    assert len(client.models()) == 2
    assert len(fake_server.servicer.calls) == 2


def test_experiments_round_trip(client: ReachRankClient) -> None:
    experiment = Experiment(
        name="ctr-v2",
        variants=(
            Variant("control", 1.0),
            Variant("treatment", 1.0, ctr_model="ctr", ctr_version=2),
        ),
        rpcs=("recommend", "rank_ads"),
        salt="s1",
        segments=("champions",),
    )
    assert client.set_experiment(experiment) == experiment
    assert client.experiments() == [experiment]
    client.delete_experiment("ctr-v2")
    assert client.experiments() == []
    with pytest.raises(ReachRankError) as caught:
        client.delete_experiment("ctr-v2")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
