"""Request mixes: id formats, Zipf skew, and requests that decode to what was meant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reachrank.v1 import ranking_pb2

from clients.workload import (
    METHODS,
    MixSettings,
    audience_workload,
    rank_ads_workload,
    read_ids,
    recommend_workload,
    score_workload,
    similar_workload,
    synthetic_ids,
    zipf_draws,
)


def test_synthetic_ids_follow_the_simulator_format() -> None:
    assert synthetic_ids("u", 3) == ["u0", "u1", "u2"]
    with pytest.raises(ValueError):
        synthetic_ids("i", 0)


def test_read_ids_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("alice\n\n bob \n")
    assert read_ids(path) == ["alice", "bob"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no ids"):
        read_ids(tmp_path / "empty.txt")


def test_zipf_draws_favour_the_first_ids() -> None:
    draws = zipf_draws(100, 50_000, 1.1, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=100)
    assert draws.min() >= 0 and draws.max() < 100
    # P(0) / P(9) = 10**1.1 ≈ 12.6 under the model.
    assert 9 < counts[0] / counts[9] < 17
    assert counts[0] > counts[1] > counts[5] > counts[50]


def test_recommend_requests_decode() -> None:
    users = synthetic_ids("u", 50)
    workload = recommend_workload(users, MixSettings(k=7, pool_size=64))
    assert workload.method == METHODS["recommend"]
    assert len(workload.requests) == 64
    decoded = [ranking_pb2.RecommendRequest.FromString(raw) for raw in workload.requests]
    assert {request.k for request in decoded} == {7}
    assert {request.user_id for request in decoded} <= set(users)


def test_rank_ads_requests_sample_distinct_items_and_bids_in_range() -> None:
    items = synthetic_ids("i", 30)
    mix = MixSettings(ads_per_request=5, slots=2, min_bid=0.5, max_bid=1.5, pool_size=32, seed=3)
    workload = rank_ads_workload(synthetic_ids("u", 10), items, mix)
    for raw in workload.requests:
        request = ranking_pb2.RankAdsRequest.FromString(raw)
        ad_ids = list(request.candidates.ad_ids)
        assert len(set(ad_ids)) == 5
        assert set(ad_ids) <= set(items)
        assert all(0.5 <= bid <= 1.5 for bid in request.candidates.bids)
        assert request.slots == 2


def test_rank_ads_with_fewer_items_than_candidates() -> None:
    workload = rank_ads_workload(["u0"], ["i0", "i1"], MixSettings(ads_per_request=20, pool_size=4))
    assert all(
        len(ranking_pb2.RankAdsRequest.FromString(r).candidates.ad_ids) == 2
        for r in workload.requests
    )


def test_score_workload_carries_the_arrays() -> None:
    workload = score_workload("deepfm", {"x": np.ones((4, 3), np.float32)})
    request = ranking_pb2.ScoreRequest.FromString(workload.requests[0])
    assert request.model == "deepfm"
    assert list(request.inputs["x"].shape) == [4, 3]


def test_similar_and_audience_requests_decode() -> None:
    items = synthetic_ids("i", 40)
    mix = MixSettings(k=4, pool_size=32)
    similar = similar_workload(items, mix)
    assert similar.method == METHODS["similar"]
    decoded = [ranking_pb2.SimilarItemsRequest.FromString(raw) for raw in similar.requests]
    assert {request.item_id for request in decoded} <= set(items)
    assert {request.k for request in decoded} == {4}
    audience = audience_workload(items, mix)
    members = [ranking_pb2.AudienceRequest.FromString(raw) for raw in audience.requests]
    assert all(len(request.item_ids) == 1 and request.n == 4 for request in members)
