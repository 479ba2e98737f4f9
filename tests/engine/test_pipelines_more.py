"""SimilarItems, Audience, Profile, diversity and segment cold start, end to end through the
real server and client, checked against the bundles' own arrays."""

from __future__ import annotations

from collections import Counter

import grpc
import numpy as np
import polars as pl
import pytest

from clients import ReachRankClient
from clients.errors import ReachRankError
from engine.server import RunningServer


def test_similar_items_are_cosine_neighbours(
    client: ReachRankClient, server: RunningServer
) -> None:
    retrieval = server.registry.get("retrieval")
    similar = client.similar_items("i5", k=5)
    assert "i5" not in similar.item_ids and len(similar.item_ids) == 5
    unit = retrieval.item_unit
    cosine = unit @ unit[retrieval.item_row["i5"]]
    cosine[retrieval.item_row["i5"]] = -np.inf
    expected = [retrieval.item_ids[i] for i in np.argsort(-cosine, kind="stable")[:5]]
    assert similar.item_ids == expected
    books = client.similar_items("i5", k=3, categories=["book"])
    assert all(i.category == "book" for i in books.items)
    with pytest.raises(ReachRankError) as err:
        client.similar_items("no-such-item", k=3)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_audience_ranks_users_by_affinity_and_filters_segments(
    client: ReachRankClient, server: RunningServer, sim_dir
) -> None:
    retrieval = server.registry.get("retrieval")
    profiles = server.registry.get("profiles")
    audience = client.audience(["i7"], n=20)
    assert len(audience.users) == 20 and audience.eligible_users == len(retrieval.user_ids)
    scores = [u.score for u in audience.users]
    assert scores == sorted(scores, reverse=True)
    # Users who already clicked or bought i7 are not in its audience unless asked for.
    events = pl.read_parquet(sim_dir / "events.parquet")
    buyers = set(
        events.filter((pl.col("item_id") == "i7") & pl.col("event").is_in(["click", "purchase"]))[
            "user_id"
        ]
    )
    assert buyers and not buyers & set(audience.user_ids)
    with_buyers = client.audience(["i7"], n=len(retrieval.user_ids), include_consumers=True)
    assert buyers <= set(with_buyers.user_ids)
    # Segment filter: everyone returned is in the segment, and the eligible count is exact.
    segment = Counter(profiles.segment_of(u)[0] for u in retrieval.user_ids).most_common(1)[0][0]
    inside = client.audience(["i7", "i8"], n=10, segments=[segment])
    assert inside.users and all(u.rfm_segment == segment for u in inside.users)
    assert inside.eligible_users == sum(
        profiles.segment_of(u)[0] == segment for u in retrieval.user_ids
    )
    cluster = client.audience(["i7"], n=5, segments=["cluster:0"])
    assert all(u.cluster == 0 for u in cluster.users)
    with pytest.raises(ReachRankError) as err:
        client.audience(["i7"], n=5, segments=["vip"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "vip" in err.value.message


def test_profile(client: ReachRankClient, server: RunningServer) -> None:
    profiles = server.registry.get("profiles")
    user = next(u for u in profiles.user_ids if profiles.segment_of(u)[0] != "never_engaged")
    profile = client.profile(user)
    assert profile.known and profile.user_id == user
    assert {"recency_days", "frequency", "monetary", "r_score", "n_impression"} <= set(
        profile.features
    )
    assert profile.rfm_segment and profile.cluster >= 0
    assert "age_bucket" in profile.attributes
    stranger = client.profile("nobody")
    assert not stranger.known and stranger.features == {}


def test_diversity_caps_categories_and_mmr_changes_the_list(client: ReachRankClient) -> None:
    plain = client.recommend("u3", k=8)
    capped = client.recommend("u3", k=8, max_per_category=2)
    assert max(Counter(i.category for i in capped.items).values()) <= 2
    assert len(capped.items) == 8
    varied = client.recommend("u3", k=8, mmr_lambda=0.3)
    assert len(varied.items) == 8 and varied.item_ids != plain.item_ids
    same = client.recommend("u3", k=8, mmr_lambda=1.0)
    assert same.item_ids == plain.item_ids
    with pytest.raises(ReachRankError) as err:
        client.recommend("u3", k=8, mmr_lambda=1.5)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_profiled_user_without_history_gets_segment_favourites(
    client: ReachRankClient, server: RunningServer
) -> None:
    retrieval = server.registry.get("retrieval")
    profiles = server.registry.get("profiles")
    newcomers = [
        u
        for u in profiles.user_ids
        if u not in retrieval.user_row and profiles.segment_of(u)[1] >= 0
    ]
    if not newcomers:
        pytest.fail("the tiny simulation should have users with impressions but no clicks")
    rec = client.recommend(newcomers[0], k=5)
    assert rec.strategy == "cold_start_segment"
    assert "profiles" in [m.name for m in rec.models]
