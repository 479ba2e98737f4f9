"""The sync client against the fake servicer: request/response mapping, metadata, errors."""

from __future__ import annotations

import threading
import uuid

import grpc
import numpy as np
import pytest

from clients import AdBid, ReachRankClient, ReachRankError
from clients.types import ModelInfo

from .conftest import FakeServer

CTR = ModelInfo(name="ctr", version=3, kind="ctr", provider="CPUExecutionProvider")


@pytest.fixture
def client(fake_server: FakeServer):
    with ReachRankClient(fake_server.target, timeout=5.0) as sdk:
        yield sdk


def test_recommend_maps_request_and_response(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    result = client.recommend(
        "u7",
        3,
        context={"device": "mobile", "hour": 13},
        categories=["books", "music"],
        min_price=5.0,
        exclude=["i9"],
    )
    assert result.item_ids == ["i0", "i1", "i2"]
    assert result.items[1].score == pytest.approx(0.5)
    assert result.items[1].retrieval_score == 9.0
    assert result.items[2].category == "books"
    assert result.items[2].price == 12.0
    assert result.strategy == "personalised"
    assert result.models == (CTR,)

    request = fake_server.servicer.calls[-1].request
    assert request.user_id == "u7"
    assert request.k == 3
    assert dict(request.context) == {"device": "mobile", "hour": "13"}
    assert list(request.filters.categories) == ["books", "music"]
    assert request.filters.HasField("min_price")
    assert request.filters.min_price == 5.0
    # An absent bound stays unset on the wire rather than becoming 0.
    assert not request.filters.HasField("max_price")
    assert list(request.exclude) == ["i9"]


def test_rank_ads_accepts_dataclasses_and_dicts(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    auction = client.rank_ads(
        "u1",
        [
            AdBid("a1", 1.0),
            {"ad_id": "a2", "bid": 3.0, "features": {"price": 9.5}},
            {"ad_id": "a3", "bid": 2.0},
            AdBid("a4", 0.1),
        ],
        slots=2,
        reserve_price=0.5,
        context={"device": "web"},
        all_ranked=True,
    )
    assert [ad.ad_id for ad in auction.ads] == ["a2", "a3", "a1"]
    assert auction.below_reserve == 1
    assert [(ad.ad_id, ad.slot, ad.price) for ad in auction.winners] == [
        ("a2", 1, 2.0),
        ("a3", 2, 1.0),
    ]
    assert auction.ads[2].slot == 0
    assert auction.ads[0].expected_value == pytest.approx(0.3)
    assert auction.models == (CTR,)

    request = fake_server.servicer.calls[-1].request
    assert request.slots == 2
    assert request.reserve_price == 0.5
    assert dict(request.context) == {"device": "web"}
    assert not request.ads  # the columnar form: ids, packed bids, overrides only where given
    assert list(request.candidates.ad_ids) == ["a1", "a2", "a3", "a4"]
    assert list(request.candidates.bids) == [1.0, 3.0, 2.0, 0.1]
    assert {i: dict(f.values) for i, f in request.candidates.features.items()} == {
        1: {"price": "9.5"}
    }
    assert request.all_ranked


def test_winners_are_in_slot_order() -> None:
    from clients.types import AdAuction, RankedAd

    ads = (
        RankedAd("b", 0.1, 1.0, 0.1, slot=2, price=0.5),
        RankedAd("c", 0.1, 1.0, 0.1, slot=0, price=0.0),
        RankedAd("a", 0.1, 1.0, 0.1, slot=1, price=0.7),
    )
    assert [ad.ad_id for ad in AdAuction(ads, 0, ()).winners] == ["a", "b"]


def test_malformed_ad_dict_is_refused(client: ReachRankClient) -> None:
    with pytest.raises(ValueError, match="ad_id and bid"):
        client.rank_ads("u1", [{"id": "a1", "bid": 1.0}])


def test_score_sends_and_returns_arrays(client: ReachRankClient, fake_server: FakeServer) -> None:
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
    result = client.score("deepfm", {"dense": dense, "ids": ids}, version=2)
    np.testing.assert_array_equal(result.outputs["score"], np.array([6.0, 19.0], np.float32))
    assert result.model == CTR
    request = fake_server.servicer.calls[-1].request
    assert (request.model, request.version) == ("deepfm", 2)
    assert set(request.inputs) == {"dense", "ids"}


def test_each_call_sends_a_fresh_uuid4_request_id(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    client.recommend("u1", 1)
    client.recommend("u1", 1)
    ids = [call.metadata["x-request-id"] for call in fake_server.servicer.calls]
    assert len(set(ids)) == 2
    assert all(uuid.UUID(value).version == 4 for value in ids)


def test_explicit_request_id_token_and_metadata_are_sent(fake_server: FakeServer) -> None:
    with ReachRankClient(
        fake_server.target, token="s3cret", metadata=[("x-tenant", "acme")]
    ) as sdk:
        sdk.recommend("u1", 1, request_id="req-42")
    metadata = fake_server.servicer.calls[-1].metadata
    assert metadata["x-request-id"] == "req-42"
    assert metadata["authorization"] == "Bearer s3cret"
    assert metadata["x-tenant"] == "acme"


def test_server_error_becomes_reachrank_error(
    client: ReachRankClient, fake_server: FakeServer
) -> None:
    fake_server.servicer.abort_with = (grpc.StatusCode.NOT_FOUND, "no model named 'nope'")
    with pytest.raises(ReachRankError) as caught:
        client.score("nope", {"x": np.zeros((1, 1), np.float32)}, request_id="req-7")
    error = caught.value
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert error.message == "no model named 'nope'"
    assert error.request_id == "req-7"
    assert "NOT_FOUND" in str(error)
    # Not retryable: exactly one attempt.
    assert len(fake_server.servicer.calls) == 1


def test_deadline_exceeded_is_mapped(client: ReachRankClient, fake_server: FakeServer) -> None:
    # The server holds the call until the test lets it go, which it does only after the
    # client answered: the client gave up at its deadline instead of waiting for the server.
    fake_server.servicer.hold = threading.Event()
    try:
        with pytest.raises(ReachRankError) as caught:
            client.recommend("u1", 1, timeout=0.1)
    finally:
        fake_server.servicer.hold.set()
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_default_timeout_comes_from_options(fake_server: FakeServer) -> None:
    fake_server.servicer.delay = 2.0
    with (
        ReachRankClient(fake_server.target, timeout=0.1) as sdk,
        pytest.raises(ReachRankError) as caught,
    ):
        sdk.recommend("u1", 1)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_reports_status(client: ReachRankClient, fake_server: FakeServer) -> None:
    assert client.health() == "SERVING"
    fake_server.set_serving(False)
    assert client.health() == "NOT_SERVING"


def test_wait_ready_returns_once_serving(client: ReachRankClient, fake_server: FakeServer) -> None:
    import threading

    fake_server.set_serving(False)
    threading.Timer(0.2, fake_server.set_serving, args=(True,)).start()
    client.wait_ready(timeout=5.0)
    assert client.health() == "SERVING"


def test_wait_ready_times_out_on_a_dead_port(closed_port: int) -> None:
    sdk = ReachRankClient(f"127.0.0.1:{closed_port}", max_attempts=1)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.wait_ready(timeout=0.3)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "not SERVING" in caught.value.message


def test_unreachable_server_is_unavailable(closed_port: int) -> None:
    sdk = ReachRankClient(f"127.0.0.1:{closed_port}", max_attempts=2, timeout=2.0)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.recommend("u1", 1)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        ReachRankClient("127.0.0.1:1", timout=1.0)


def test_similar_items(client: ReachRankClient, fake_server: FakeServer) -> None:
    result = client.similar_items("i5", 3, categories="music", max_price=30.0)
    assert result.item_ids == ["i5-like-0", "i5-like-1", "i5-like-2"]
    assert result.items[1].score == pytest.approx(0.9)
    assert result.items[0].category == "music"
    assert result.models == (CTR,)
    request = fake_server.servicer.calls[-1].request
    # A lone string is one category, not a list of letters.
    assert list(request.filters.categories) == ["music"]
    assert request.filters.max_price == 30.0
    assert not request.filters.HasField("min_price")


def test_audience(client: ReachRankClient, fake_server: FakeServer) -> None:
    result = client.audience(
        ["i1", "i2"], 4, segments=["champions", "cluster:3"], include_consumers=True
    )
    assert result.user_ids == ["u0", "u1", "u2", "u3"]
    assert result.users[1].score == 3.0
    assert (result.users[2].rfm_segment, result.users[2].cluster) == ("champions", 2)
    assert result.eligible_users == 1000
    request = fake_server.servicer.calls[-1].request
    assert list(request.item_ids) == ["i1", "i2"]
    assert list(request.segments) == ["champions", "cluster:3"]
    assert request.include_consumers
    client.audience("i9", 1)
    assert list(fake_server.servicer.calls[-1].request.item_ids) == ["i9"]


def test_profile_known_and_unknown(client: ReachRankClient) -> None:
    known = client.profile("u1")
    assert known.known
    assert known.features == {"recency_days": 3.0, "frequency": 7.0}
    assert known.attributes == {"gender": "f"}
    assert (known.rfm_segment, known.cluster) == ("loyal", 2)
    unknown = client.profile("stranger")
    assert not unknown.known
    assert unknown.features == {}


def test_recommend_diversity_options(client: ReachRankClient, fake_server: FakeServer) -> None:
    client.recommend("u1", 5, max_per_category=2, mmr_lambda=0.5)
    diversity = fake_server.servicer.calls[-1].request.diversity
    assert (diversity.max_per_category, diversity.mmr_lambda) == (2, 0.5)


def test_the_fake_server_prices_like_the_real_auction(client: ReachRankClient) -> None:
    # "hi" wins on pCTR x bid (0.4 vs 0.3) with the lower bid: under GSP it pays the runner-up's
    # expected value over its own pCTR (0.3 / 0.4), not the runner-up's bid (3.0, above its own).
    auction = client.rank_ads(
        "u1",
        [
            {"ad_id": "hi", "bid": 1.0, "features": {"pctr": "0.4"}},
            {"ad_id": "lo", "bid": 3.0, "features": {"pctr": "0.1"}},
        ],
        slots=1,
    )
    assert [(ad.ad_id, ad.slot) for ad in auction.winners] == [("hi", 1)]
    assert auction.winners[0].price == pytest.approx(0.75)
