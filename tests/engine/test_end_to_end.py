"""The backbone end to end: trained bundles → real server on loopback → real client."""

from __future__ import annotations

import grpc
import numpy as np
import polars as pl
import pytest

from clients import ReachRankClient
from clients.errors import ReachRankError


def _consumed(sim_dir, user_id: str) -> set[str]:
    events = pl.read_parquet(sim_dir / "events.parquet")
    return set(
        events.filter(
            (pl.col("user_id") == user_id) & pl.col("event").is_in(["click", "purchase"])
        )["item_id"]
    )


def _catalogue(sim_dir) -> pl.DataFrame:
    return pl.read_parquet(sim_dir / "items.parquet")


def test_health_is_serving(client: ReachRankClient) -> None:
    assert client.health() == "SERVING"


def test_recommend_known_user(client: ReachRankClient, sim_dir) -> None:
    user = pl.read_parquet(sim_dir / "events.parquet").filter(pl.col("event") == "click")[
        "user_id"
    ][0]
    rec = client.recommend(user, k=10)
    assert rec.strategy == "personalised"
    ids = [i.item_id for i in rec.items]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert set(ids) <= set(_catalogue(sim_dir)["item_id"])
    scores = [i.score for i in rec.items]
    assert all(0.0 < s < 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    # Items the user already clicked or bought are never recommended again.
    assert not set(ids) & _consumed(sim_dir, user)
    assert [(m.name, m.kind) for m in rec.models] == [("retrieval", "retrieval"), ("ctr", "ctr")]
    assert all(m.version >= 1 and m.provider == "CPUExecutionProvider" for m in rec.models)


def test_recommend_filters_and_exclusions(client: ReachRankClient, sim_dir) -> None:
    items = _catalogue(sim_dir)
    first = client.recommend("u3", k=5)
    excluded = [first.items[0].item_id]
    rec = client.recommend(
        "u3", k=5, categories=["book", "course"], max_price=100.0, exclude=excluded
    )
    assert rec.items
    got = items.filter(pl.col("item_id").is_in([i.item_id for i in rec.items]))
    assert set(got["category"]) <= {"book", "course"}
    assert got["price"].max() <= 100.0
    assert excluded[0] not in {i.item_id for i in rec.items}


def test_recommend_unknown_user_falls_back_to_popularity(client: ReachRankClient, sim_dir) -> None:
    rec = client.recommend("someone-new", k=4)
    assert rec.strategy == "cold_start_popularity"
    assert len(rec.items) == 4
    scores = [i.score for i in rec.items]
    assert scores == sorted(scores, reverse=True)


def test_recommend_more_than_catalogue_returns_what_exists(
    client: ReachRankClient, sim_dir
) -> None:
    rec = client.recommend("u1", k=1000)
    n_items = _catalogue(sim_dir).height
    assert 0 < len(rec.items) <= n_items


def test_rank_ads_orders_by_expected_value_and_charges_gsp(client: ReachRankClient) -> None:
    ads = [
        {"ad_id": f"i{j}", "bid": b} for j, b in [(1, 1.0), (2, 2.5), (3, 0.2), (4, 4.0), (5, 1.5)]
    ]
    auction = client.rank_ads("u7", ads, slots=2, reserve_price=0.5, all_ranked=True)
    assert auction.below_reserve == 1  # i3 bids 0.2 < 0.5
    assert {a.ad_id for a in auction.ads} == {"i1", "i2", "i4", "i5"}
    ev = [a.expected_value for a in auction.ads]
    assert ev == sorted(ev, reverse=True)
    for a in auction.ads:
        assert 0.0 < a.pctr < 1.0
        assert a.expected_value == pytest.approx(a.pctr * a.bid, rel=1e-6)
    winners = auction.winners
    assert [w.slot for w in winners] == [1, 2]
    for w, nxt in zip(winners, auction.ads[1:3], strict=True):
        # Second price: just enough to beat the next ad's expected value, never above the bid.
        assert w.price == pytest.approx(max(0.5, nxt.expected_value / w.pctr), rel=1e-6)
        assert 0.5 <= w.price <= w.bid
    assert all(a.slot == 0 and a.price == 0 for a in auction.ads[2:])


def test_rank_ads_answers_the_winners_unless_asked_for_every_ad(client: ReachRankClient) -> None:
    ads = [{"ad_id": f"i{j}", "bid": 0.5 + 0.25 * j} for j in range(1, 30)]
    every = client.rank_ads("u7", ads, slots=3, all_ranked=True)
    winners = client.rank_ads("u7", ads, slots=3)
    assert len(every.ads) == 29 and len(winners.ads) == 3
    assert winners.ads == every.ads[:3] == tuple(every.winners)
    assert [a.slot for a in winners.ads] == [1, 2, 3]


def test_rank_ads_one_message_per_ad_still_works_and_agrees_with_columns(
    client: ReachRankClient, server
) -> None:
    """Callers of the older form (`ads`, one message each) get every eligible ad as before,
    with the same numbers the columnar form gives."""
    import grpc
    from reachrank.v1 import ranking_pb2, ranking_pb2_grpc

    ads = [{"ad_id": f"i{j}", "bid": 0.3 * j} for j in range(1, 12)]
    columns = client.rank_ads("u7", ads, slots=2, reserve_price=0.5, all_ranked=True)
    request = ranking_pb2.RankAdsRequest(
        user_id="u7",
        ads=[ranking_pb2.Ad(ad_id=a["ad_id"], bid=a["bid"]) for a in ads],
        slots=2,
        reserve_price=0.5,
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response = ranking_pb2_grpc.RankingStub(channel).RankAds(request, timeout=10)
        assert not response.HasField("ranked")
        got = [(a.ad_id, a.pctr, a.bid, a.slot, a.price) for a in response.ads]
        assert got == [(a.ad_id, a.pctr, a.bid, a.slot, a.price) for a in columns.ads]
        assert response.below_reserve == columns.below_reserve == 1
        both = ranking_pb2.RankAdsRequest(user_id="u7", ads=request.ads, slots=1)
        both.candidates.ad_ids.append("i1")
        both.candidates.bids.append(1.0)
        stub = ranking_pb2_grpc.RankingStub(channel)
        for bad, words in [
            (both, "not both"),
            (
                ranking_pb2.RankAdsRequest(
                    user_id="u7",
                    slots=1,
                    candidates=ranking_pb2.AdColumns(ad_ids=["i1", "i2"], bids=[1.0]),
                ),
                "one bid per ad",
            ),
            (
                ranking_pb2.RankAdsRequest(
                    user_id="u7",
                    slots=1,
                    candidates=ranking_pb2.AdColumns(
                        ad_ids=["i1"],
                        bids=[1.0],
                        features={3: ranking_pb2.AdFeatures(values={"price": "2"})},
                    ),
                ),
                "names no ad",
            ),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.RankAds(bad, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details()


def test_rank_ads_feature_overrides_change_pctr(client: ReachRankClient) -> None:
    base = client.rank_ads("u7", [{"ad_id": "new-ad", "bid": 1.0}])
    cheap = client.rank_ads(
        "u7", [{"ad_id": "new-ad", "bid": 1.0, "features": {"category": "grocery", "price": "2"}}]
    )
    assert base.ads[0].pctr != pytest.approx(cheap.ads[0].pctr)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.recommend("", k=5), "user_id"),
        (lambda c: c.recommend("u1", k=0), "k"),
        (lambda c: c.recommend("u1", k=5, min_price=10, max_price=1), "min_price"),
        (lambda c: c.rank_ads("u1", [], slots=1), "ads"),
        (lambda c: c.rank_ads("u1", [{"ad_id": "a", "bid": float("nan")}]), "bid"),
        (lambda c: c.rank_ads("u1", [{"ad_id": "a", "bid": 1.0}], slots=0), "slots"),
        (
            lambda c: c.rank_ads("u1", [{"ad_id": "a", "bid": 1.0}, {"ad_id": "a", "bid": 2.0}]),
            "twice",
        ),
        (
            lambda c: c.rank_ads(
                "u1", [{"ad_id": "a", "bid": 1.0, "features": {"price": "cheap"}}]
            ),
            "price",
        ),
    ],
)
def test_bad_input_is_invalid_argument(client: ReachRankClient, call, field: str) -> None:
    with pytest.raises(ReachRankError) as err:
        call(client)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.message
    # The server keeps serving.
    assert client.recommend("u1", k=1).items


def test_score_runs_the_ctr_graph(client: ReachRankClient, trained_repo) -> None:
    import json

    manifest = json.loads((trained_repo / "ctr" / "1" / "manifest.json").read_text())
    n_cat = manifest["onnx"]["inputs"][0]["shape"][1]
    n_num = manifest["onnx"]["inputs"][1]["shape"][1]
    rng = np.random.default_rng(0)
    cat = rng.integers(0, manifest["features"]["n_buckets"], (7, n_cat), dtype=np.int64)
    num = rng.normal(size=(7, n_num)).astype(np.float32)
    result = client.score("ctr", {"cat": cat, "num": num})
    assert result.outputs["pctr"].shape == (7,)
    assert ((result.outputs["pctr"] > 0) & (result.outputs["pctr"] < 1)).all()
    assert result.model.name == "ctr"
    with pytest.raises(ReachRankError) as err:
        client.score("ctr", {"cat": cat})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ReachRankError) as err:
        client.score("no-such-model", {"cat": cat, "num": num})
    assert err.value.code == grpc.StatusCode.NOT_FOUND
