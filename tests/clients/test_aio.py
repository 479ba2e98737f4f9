"""The asyncio client mirrors the sync one: mapping, retries, deadlines, errors, health."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import numpy as np
import pytest

from clients import AdBid, AsyncReachRankClient, ReachRankError

from .conftest import FakeServer


def test_calls_map_like_the_sync_client(fake_server: FakeServer) -> None:
    async def scenario():
        async with AsyncReachRankClient(fake_server.target, timeout=5.0) as sdk:
            await sdk.wait_ready(timeout=5.0)
            return (
                await sdk.recommend("u1", 2, context={"device": "tv"}, max_price=20.0),
                await sdk.rank_ads("u1", [AdBid("a", 1.0), {"ad_id": "b", "bid": 2.0}], slots=1),
                await sdk.score("m", {"x": np.ones((2, 2), np.float64)}),
                await sdk.health(),
                await sdk.similar_items("i1", 2),
                await sdk.audience("i1", 3, segments="at_risk"),
                await sdk.profile("u9"),
            )

    recommendation, auction, scores, status, similar, audience, profile = asyncio.run(scenario())
    assert similar.item_ids == ["i1-like-0", "i1-like-1"]
    assert audience.user_ids == ["u0", "u1", "u2"]
    assert profile.known and profile.rfm_segment == "loyal"
    assert recommendation.item_ids == ["i0", "i1"]
    assert [ad.ad_id for ad in auction.winners] == ["b"]
    np.testing.assert_array_equal(scores.outputs["score"], [2.0, 2.0])
    assert status == "SERVING"
    first = fake_server.servicer.calls[0]
    assert first.request.filters.max_price == 20.0
    assert uuid.UUID(first.metadata["x-request-id"]).version == 4


def test_feedback_and_admin_calls(fake_server: FakeServer) -> None:
    from clients import Experiment, Variant

    async def scenario():
        async with AsyncReachRankClient(fake_server.target, timeout=5.0) as sdk:
            rec = await sdk.recommend("u1", 2)
            accepted = await sdk.log_events(rec.feedback("u1", "impression"))
            models = await sdk.models()
            loaded = await sdk.load_model("ctr", 1)
            unloaded = await sdk.unload_model("ctr")
            stored = await sdk.set_experiment(Experiment("e", (Variant("a", 1.0),)))
            listed = await sdk.experiments()
            await sdk.delete_experiment("e")
            return rec, accepted, models, loaded, unloaded, stored, listed, await sdk.experiments()

    rec, accepted, models, loaded, unloaded, stored, listed, after = asyncio.run(scenario())
    assert accepted == 2
    assert {e.request_id for e in fake_server.feedback.events} == {rec.request_id}
    assert len(models) == 2
    assert loaded.policy == "pinned:1" and unloaded.state == "UNLOADED"
    assert listed == [stored] and after == []


def test_many_concurrent_calls_share_one_channel(fake_server: FakeServer) -> None:
    async def scenario():
        async with AsyncReachRankClient(fake_server.target, timeout=5.0) as sdk:
            return await asyncio.gather(*(sdk.recommend(f"u{n}", 1) for n in range(50)))

    results = asyncio.run(scenario())
    assert len(results) == 50
    assert {call.request.user_id for call in fake_server.servicer.calls} == {
        f"u{n}" for n in range(50)
    }


def test_unavailable_is_retried(fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 2

    async def scenario():
        async with AsyncReachRankClient(
            fake_server.target, max_attempts=3, initial_backoff=0.01, timeout=5.0
        ) as sdk:
            return await sdk.recommend("u1", 1, request_id="same")

    assert asyncio.run(scenario()).item_ids == ["i0"]
    assert [call.metadata["x-request-id"] for call in fake_server.servicer.calls] == ["same"] * 3


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ({"delay": 2.0}, grpc.StatusCode.DEADLINE_EXCEEDED),
        (
            {"abort_with": (grpc.StatusCode.PERMISSION_DENIED, "no ads for you")},
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    ],
)
def test_failures_become_reachrank_errors(
    fake_server: FakeServer, setup: dict, code: grpc.StatusCode
) -> None:
    for name, value in setup.items():
        setattr(fake_server.servicer, name, value)

    async def scenario():
        async with AsyncReachRankClient(fake_server.target, timeout=0.2) as sdk:
            await sdk.rank_ads("u1", [AdBid("a", 1.0)], request_id="r-9")

    with pytest.raises(ReachRankError) as caught:
        asyncio.run(scenario())
    assert caught.value.code is code
    assert caught.value.request_id == "r-9"
    if code is grpc.StatusCode.PERMISSION_DENIED:
        assert caught.value.message == "no ads for you"


def test_wait_ready_times_out(closed_port: int) -> None:
    async def scenario():
        async with AsyncReachRankClient(f"127.0.0.1:{closed_port}", max_attempts=1) as sdk:
            await sdk.wait_ready(timeout=0.3)

    with pytest.raises(ReachRankError) as caught:
        asyncio.run(scenario())
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_async_client_mirrors_the_sync_one() -> None:
    import inspect

    from clients import ReachRankClient

    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name != "close"
        }

    sync, asynchronous = public(ReachRankClient), public(AsyncReachRankClient)
    # The same calls with the same parameters, defaults and result types; only `await` differs.
    assert sync == asynchronous
    assert all(
        inspect.iscoroutinefunction(getattr(AsyncReachRankClient, name)) for name in asynchronous
    )
