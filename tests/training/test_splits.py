"""Splits: parts partition the log, and no test event leaks before training events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.readers import read_events
from training.splits import ORDER, Split, global_time_split, per_user_split

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _log(rows: list[tuple[str, str, int]]) -> pl.LazyFrame:
    """(user, item, day) rows as a minimal conformed log."""
    return pl.LazyFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "ts": [T0 + timedelta(days=d) for _, _, d in rows],
            "event": ["click"] * len(rows),
        }
    )


SMALL = _log(
    [("a", f"i{d}", d) for d in range(5)]  # a: days 0..4
    + [("b", "i0", 2), ("b", "i1", 2), ("b", "i2", 7)]  # b: a tie on day 2
    + [("c", "i9", 9)]  # c: a single event
)


def _parts(split: Split) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    train, valid, test = pl.collect_all([split.train, split.valid, split.test])
    return train, valid, test


def _items_by_user(frame: pl.DataFrame) -> dict[str, list[str]]:
    grouped = frame.group_by("user_id").agg(pl.col("item_id").sort())
    return dict(grouped.sort("user_id").iter_rows())


def _assert_no_leak_per_user(train: pl.DataFrame, later: pl.DataFrame) -> None:
    """Every event in ``later`` comes strictly after all of the same user's events in
    ``train`` in the split's order (time, then the tie-break columns): not even a tie."""
    both = pl.concat(
        [train.with_columns(_later=pl.lit(False)), later.with_columns(_later=pl.lit(True))]
    )
    ranked = both.with_columns(pl.struct(list(ORDER)).rank("dense").over("user_id").alias("_r"))
    per_user = (
        ranked.group_by("user_id")
        .agg(
            pl.col("_r").filter(~pl.col("_later")).max().alias("last_train"),
            pl.col("_r").filter(pl.col("_later")).min().alias("first_later"),
        )
        .drop_nulls()
    )
    assert per_user.height > 0
    assert (per_user["first_later"] > per_user["last_train"]).all()


def test_global_split_with_given_cuts() -> None:
    split = global_time_split(
        SMALL, test_cut=T0 + timedelta(days=4), valid_cut=T0 + timedelta(days=2)
    )
    train, valid, test = _parts(split)
    assert _items_by_user(train) == {"a": ["i0", "i1", "i2"], "b": ["i0", "i1"]}
    assert _items_by_user(valid) == {"a": ["i3", "i4"]}
    assert _items_by_user(test) == {"b": ["i2"], "c": ["i9"]}
    assert test["ts"].min() > T0 + timedelta(days=4)
    spec = json.loads(json.dumps(split.spec))
    assert spec["kind"] == "global_time" and spec["test_cut"] == "2024-01-05T00:00:00+00:00"
    described = split.describe()
    assert described["train"] == {"rows": 5, "users": 2}
    assert described["test"] == {"rows": 2, "users": 2}
    assert described["test_users_not_in_train"] == 1  # c appears only after the cut


def test_global_split_from_fractions_on_movielens(datasets: Path) -> None:
    events = read_events(datasets / "ml-100k", "movielens").events
    split = global_time_split(events, test_fraction=0.2, valid_fraction=0.1)
    train, valid, test = _parts(split)
    assert train.height + valid.height + test.height == 100_000
    test_cut = datetime.fromisoformat(split.spec["test_cut"])
    valid_cut = datetime.fromisoformat(split.spec["valid_cut"])
    assert test["ts"].min() > test_cut >= valid["ts"].max()
    assert valid["ts"].min() > valid_cut >= train["ts"].max()
    assert test.height == pytest.approx(20_000, abs=50)
    assert valid.height == pytest.approx(10_000, abs=50)


def test_per_user_fraction_split_hand_counts() -> None:
    split = per_user_split(SMALL, test_fraction=0.4)
    train, valid, test = _parts(split)
    # a: 40% of 5 = 2 test; b: 40% of 3 = 1.2 -> 1; c: one event stays in train (min_train=1).
    assert _items_by_user(test) == {"a": ["i3", "i4"], "b": ["i2"]}
    assert _items_by_user(train) == {"a": ["i0", "i1", "i2"], "b": ["i0", "i1"], "c": ["i9"]}
    assert valid.is_empty()
    assert json.loads(json.dumps(split.spec))["test_fraction"] == 0.4


def test_per_user_last_n_with_valid_and_min_train() -> None:
    split = per_user_split(SMALL, test_last_n=1, valid_last_n=1, min_train=2)
    train, valid, test = _parts(split)
    # a: 5 events -> 3/1/1. b: 3 events, min_train 2 leaves one: valid shrinks first.
    # c: one event, fewer than min_train: all train.
    assert _items_by_user(test) == {"a": ["i4"], "b": ["i2"]}
    assert _items_by_user(valid) == {"a": ["i3"]}
    assert _items_by_user(train) == {"a": ["i0", "i1", "i2"], "b": ["i0", "i1"], "c": ["i9"]}


def test_per_user_ties_are_broken_deterministically() -> None:
    # Same time, listed against the tie-break order: z is still the last event.
    tied = _log([("u", "z", 1), ("u", "x", 1), ("u", "y", 1)])
    for _ in range(3):
        test = per_user_split(tied, test_last_n=1).test.collect()
        assert test["item_id"].to_list() == ["z"]


def test_per_user_split_has_no_leak_on_movielens(datasets: Path) -> None:
    events = read_events(datasets / "ml-100k", "movielens").events
    split = per_user_split(events, test_fraction=0.2, valid_fraction=0.1)
    train, valid, test = _parts(split)
    assert train.height + valid.height + test.height == 100_000
    _assert_no_leak_per_user(train, test)
    _assert_no_leak_per_user(train, valid)
    _assert_no_leak_per_user(valid, test)
    # Every MovieLens user has at least 20 ratings, so every user is in test.
    assert test["user_id"].n_unique() == 943
    sizes = events.group_by("user_id").len().collect()
    per_user_test = test.group_by("user_id").len().join(sizes, on="user_id")
    expected = (per_user_test["len_right"] * 0.2 + 0.5).floor().cast(pl.UInt32)
    assert (per_user_test["len"] == expected).all()


def test_split_argument_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of test_last_n and test_fraction"):
        per_user_split(SMALL, test_last_n=1, test_fraction=0.2)
    with pytest.raises(ValueError, match="exactly one of test_last_n and test_fraction"):
        per_user_split(SMALL)
    with pytest.raises(ValueError, match="leave some training data"):
        global_time_split(SMALL, test_fraction=0.6, valid_fraction=0.4)
    with pytest.raises(ValueError, match="timezone-aware"):
        global_time_split(SMALL, test_cut=datetime(2024, 1, 3))
    with pytest.raises(ValueError, match="after test_cut"):
        global_time_split(SMALL, test_cut=T0, valid_cut=T0 + timedelta(days=1))


@settings(max_examples=60, deadline=None)
@given(
    days=st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 5)), min_size=1, max_size=40),
    test_fraction=st.floats(0.0, 0.9),
    valid_last_n=st.integers(0, 3),
    min_train=st.integers(0, 3),
)
def test_per_user_split_properties(
    days: list[tuple[str, int]], test_fraction: float, valid_last_n: int, min_train: int
) -> None:
    log = _log([(user, f"i{n}", day) for n, (user, day) in enumerate(days)])
    split = per_user_split(
        log, test_fraction=test_fraction, valid_last_n=valid_last_n, min_train=min_train
    )
    train, valid, test = _parts(split)
    assert train.height + valid.height + test.height == len(days)
    later = pl.concat([valid, test])
    for user in {u for u, _ in days}:
        n_user = sum(1 for u, _ in days if u == user)
        user_train = train.filter(pl.col("user_id") == user)
        assert user_train.height >= min(min_train, n_user)
    # Strictly after in the split's order, even where events share a day (ties are common).
    for earlier, after in ((train, later), (valid, test)):
        if earlier.join(after, on="user_id").height:
            _assert_no_leak_per_user(earlier, after)
