"""User profiles, RFM segments, category affinities, K-means segments and item stats
against hand-computed values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from training.profiles import (
    category_affinities,
    fit_beta_prior,
    item_stats,
    kmeans_segments,
    rfm_segment,
    user_profiles,
)
from training.readers import read_events

T0 = datetime(2024, 1, 1, tzinfo=UTC)
AS_OF = T0 + timedelta(days=11)


def _events(rows: list[tuple[str, str, float, str, float | None, str | None]]) -> pl.LazyFrame:
    """(user, item, day, event, value, request_id) rows as a conformed log."""
    return pl.LazyFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "ts": [T0 + timedelta(days=r[2]) for r in rows],
            "event": [r[3] for r in rows],
            "value": [r[4] for r in rows],
            "price": [None] * len(rows),
            "request_id": [r[5] for r in rows],
        },
        schema_overrides={"value": pl.Float64, "price": pl.Float64, "request_id": pl.String},
    )


LOG = _events(
    [
        # u1: two baskets (r1 on day 10 with two lines, r2 on day 5), a click, an impression.
        ("u1", "i1", 10, "purchase", 10.0, "r1"),
        ("u1", "i2", 10, "purchase", 20.0, "r1"),
        ("u1", "i3", 5, "purchase", 30.0, "r2"),
        ("u1", "i1", 9, "click", None, None),
        ("u1", "i2", 8, "impression", None, "r9"),
        ("u1", "i1", 12, "purchase", 1000.0, "r5"),  # after as_of: ignored
        # u2: one old purchase.
        ("u2", "i2", 1, "purchase", 100.0, "r3"),
        # u3: two clicks, one on an item without a category.
        ("u3", "i9", 8, "click", None, None),
        ("u3", "i3", 9, "click", None, None),
        # u4: impressions only.
        ("u4", "i1", 3, "impression", None, "r4"),
        # u5: first seen after as_of.
        ("u5", "i1", 20, "purchase", 5.0, "r6"),
    ]
)
ITEMS = pl.LazyFrame({"item_id": ["i1", "i2", "i3", "i9"], "category": ["A", "B", "A", None]})


def test_user_profiles_hand_values() -> None:
    profiles = user_profiles(LOG, AS_OF, ITEMS)
    rows = {r["user_id"]: r for r in profiles.iter_rows(named=True)}
    assert sorted(rows) == ["u1", "u2", "u3", "u4"]
    u1 = rows["u1"]
    assert u1["frequency"] == 3  # baskets r1, r2 and the request-less click
    assert u1["monetary"] == 60.0
    assert u1["recency_days"] == 1.0
    assert u1["days_since_first_seen"] == 6.0
    assert (u1["n_purchase"], u1["n_click"], u1["n_impression"], u1["n_rating"]) == (3, 1, 1, 0)
    assert u1["n_events"] == 5
    assert (rows["u2"]["frequency"], rows["u2"]["monetary"], rows["u2"]["recency_days"]) == (
        1,
        100.0,
        10.0,
    )
    assert (rows["u3"]["frequency"], rows["u3"]["monetary"], rows["u3"]["recency_days"]) == (
        2,
        0.0,
        2.0,
    )
    assert rows["u4"]["frequency"] == 0 and rows["u4"]["recency_days"] is None
    # Scores among the three engaged users: 1 + floor(5 * (users strictly worse) / 3).
    # Recency 1, 10, 2 days; frequency 3, 1, 2; monetary 60, 100, 0.
    scores = {u: (r["r_score"], r["f_score"], r["m_score"]) for u, r in rows.items()}
    assert scores == {"u1": (4, 4, 2), "u2": (1, 1, 4), "u3": (2, 2, 1), "u4": (None, None, None)}
    # fm = (F + M) / 2: u1 3.0 with R 4 -> loyal; u2 2.5, u3 1.5 with R <= 2 -> hibernating.
    segments = {u: r["rfm_segment"] for u, r in rows.items()}
    assert segments == {
        "u1": "loyal",
        "u2": "hibernating",
        "u3": "hibernating",
        "u4": "never_engaged",
    }
    # u1 engaged with i1 (A) twice, i2 (B), i3 (A); u3's click on uncategorised i9 is left out.
    tops = {u: (r["top_category"], r["top_category_share"]) for u, r in rows.items()}
    assert tops == {"u1": ("A", 0.75), "u2": ("B", 1.0), "u3": ("A", 1.0), "u4": (None, None)}


def test_category_affinities_long_table() -> None:
    table = category_affinities(LOG, ITEMS, AS_OF)
    assert table.rows() == [
        ("u1", "A", 3, 0.75),
        ("u1", "B", 1, 0.25),
        ("u2", "B", 1, 1.0),
        ("u3", "A", 1, 1.0),
    ]
    with pytest.raises(ValueError, match="'category'"):
        category_affinities(LOG, ITEMS.drop("category"), AS_OF)


def test_rfm_segment_rules() -> None:
    scores = pl.DataFrame(
        {
            "r_score": [5, 4, 4, 3, 3, 2, 1, 1, None],
            "f_score": [5, 1, 5, 3, 1, 5, 2, 5, None],
            "m_score": [3, 1, 1, 4, 2, 4, 1, 1, None],
        }
    )
    segments = scores.select(rfm_segment(True).alias("segment"))["segment"].to_list()
    assert segments == [
        "champions",  # R 5, fm 4
        "new",  # R 4, F 1
        "loyal",  # R 4, fm 3 (not 4)
        "loyal",  # R 3, fm 3.5
        "potential",  # R 3, fm 1.5
        "at_risk",  # R 2, fm 4.5
        "hibernating",  # R 1, fm 1.5
        "at_risk",  # R 1, fm 3
        "never_engaged",
    ]
    # Without revenue in the log, F alone stands for fm: (R 4, F 5, M 1) is a champion.
    assert scores.select(rfm_segment(False).alias("segment"))["segment"].to_list()[2] == "champions"


def test_ratings_only_log_reaches_top_segments(datasets: Path) -> None:
    events = read_events(datasets / "ml-100k", "movielens").events
    as_of = events.select(pl.col("ts").max()).collect().item()
    profiles = user_profiles(events, as_of)
    assert profiles.height == 943
    assert profiles["monetary"].sum() == 0
    counts = dict(profiles["rfm_segment"].value_counts().iter_rows())
    assert counts.get("champions", 0) > 0 and counts.get("hibernating", 0) > 0
    assert profiles["r_score"].min() == 1 and profiles["r_score"].max() == 5


def _blobs(seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    centres = [(1.0, 1.0, 10.0), (60.0, 20.0, 2000.0), (200.0, 3.0, 50.0)]
    sizes = [50, 30, 20]
    rows = np.vstack(
        [
            np.exp(np.log(c) + rng.normal(0, 0.05, (n, 3)))
            for c, n in zip(centres, sizes, strict=True)
        ]
    )
    return pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(rows.shape[0])],
            "recency_days": rows[:, 0],
            "frequency": rows[:, 1],
            "monetary": rows[:, 2],
        }
    )


def test_kmeans_picks_k_by_silhouette_and_is_deterministic() -> None:
    profiles = _blobs()
    features = ["recency_days", "frequency", "monetary"]
    first = kmeans_segments(profiles, features, seed=3)
    again = kmeans_segments(profiles, features, seed=3)
    assert first.k == 3
    assert max(first.silhouette, key=first.silhouette.__getitem__) == 3
    assert first.assignments.equals(again.assignments)
    segments = first.assignments["segment"].to_numpy()
    # Ids by size: the 50-user blob is 0, the 30-user blob 1, the 20-user blob 2.
    assert segments[:50].tolist() == [0] * 50
    assert segments[50:80].tolist() == [1] * 30
    assert segments[80:].tolist() == [2] * 20
    np.testing.assert_array_equal(first.assign(profiles), segments)
    described = json.loads(json.dumps(first.to_dict()))
    assert described["k"] == 3 and len(described["centroids"]) == 3


def test_kmeans_with_given_k_and_missing_values() -> None:
    profiles = _blobs().with_columns(
        pl.when(pl.col("user_id") == "u0")
        .then(None)
        .otherwise(pl.col("recency_days"))
        .alias("recency_days")
    )
    segments = kmeans_segments(profiles, ["recency_days", "frequency", "monetary"], k=2)
    assert segments.k == 2 and set(segments.silhouette) == {2}
    # A missing recency is filled with the largest one seen.
    assert segments.fill[0] == pytest.approx(profiles["recency_days"].max())
    with pytest.raises(ValueError, match="lack the feature"):
        kmeans_segments(profiles, ["recency_days", "clv"])


def test_kmeans_on_online_retail_profiles(datasets: Path) -> None:
    result = read_events(datasets / "online-retail", "online-retail")
    as_of = result.events.select(pl.col("ts").max()).collect().item()
    profiles = user_profiles(result.events, as_of)
    assert profiles.height == 4_335
    segments = kmeans_segments(profiles, k_range=(2, 3, 4))
    assert segments.k in (2, 3, 4)
    assert segments.assignments.height == profiles.height
    assert all(-1.0 <= s <= 1.0 for s in segments.silhouette.values())


# --- items ------------------------------------------------------------------------------------


def _ctr_log() -> pl.LazyFrame:
    """i1..i3: 10 impressions with 1, 3, 2 clicks; i4: 2 impressions, 1 click."""
    rows: list[tuple[str, str, float, str, float | None, str | None]] = []
    for item, impressions, clicks in (("i1", 10, 1), ("i2", 10, 3), ("i3", 10, 2), ("i4", 2, 1)):
        rows += [(f"v{n}", item, 2, "impression", None, None) for n in range(impressions)]
        rows += [(f"v{n}", item, 3, "click", None, None) for n in range(clicks)]
    return pl.concat(
        [
            _events(rows),
            _events(
                [("v0", "i1", 4, "purchase", 8.0, "r1"), ("v1", "i1", 11, "purchase", 4.0, "r2")]
            ),
        ]
    ).with_columns(
        pl.when(pl.col("event") == "purchase").then(pl.col("value")).otherwise(None).alias("price")
    )


def test_beta_prior_method_of_moments() -> None:
    # CTRs 0.1, 0.3, 0.2 (i4 has too few impressions): m = 0.2, v = 0.02 / 3,
    # alpha + beta = 0.16 / v - 1 = 23, alpha = 4.6, beta = 18.4.
    prior = fit_beta_prior([1, 3, 2, 1], [10, 10, 10, 2])
    assert (prior.alpha, prior.beta, prior.n_items) == (pytest.approx(4.6), pytest.approx(18.4), 3)
    # Too few items to fit: the pooled CTR with the weakest strength.
    weak = fit_beta_prior([1], [4])
    assert weak.mean == pytest.approx(0.25) and weak.alpha + weak.beta == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs impressions"):
        fit_beta_prior([0], [0])


def test_item_stats_hand_values() -> None:
    items = pl.LazyFrame({"item_id": ["i2"], "price": [9.9]})
    stats = item_stats(_ctr_log(), AS_OF, items)
    rows = {r["item_id"]: r for r in stats.iter_rows(named=True)}
    i1, i4 = rows["i1"], rows["i4"]
    assert (i1["n_impression"], i1["n_click"], i1["n_purchase"]) == (10, 1, 2)
    assert i1["n_users"] == 10 and i1["revenue"] == 12.0
    assert i1["ctr"] == pytest.approx(0.1)
    assert i1["ctr_smoothed"] == pytest.approx((1 + 4.6) / (10 + 23))
    assert i4["ctr"] == pytest.approx(0.5)
    assert i4["ctr_smoothed"] == pytest.approx((1 + 4.6) / (2 + 23))  # pulled towards 0.2
    assert i1["days_since_last_event"] == 0.0 and i1["age_days"] == 9.0
    assert i1["price"] == 6.0  # median of the purchase prices 8 and 4
    assert rows["i2"]["price"] == 9.9  # from the items table
    assert rows["i3"]["price"] is None
    assert i1["mean_rating"] is None


def test_item_stats_without_impressions(datasets: Path) -> None:
    events = read_events(datasets / "ml-100k", "movielens").events
    as_of = events.select(pl.col("ts").max()).collect().item()
    stats = item_stats(events, as_of)
    assert stats.height == 1682
    assert stats["ctr"].null_count() == stats.height
    star_wars = stats.filter(pl.col("item_id") == "50").row(0, named=True)
    assert star_wars["n_rating"] == 583 and star_wars["n_users"] == 583
    assert star_wars["mean_rating"] == pytest.approx(4.358, abs=1e-3)


def test_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        user_profiles(LOG, datetime(2024, 1, 11))
