"""History features: hand-computed counts, no leakage (a row at time t never counts an event at
or after t), the shipped snapshot and the fields' defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels.featurize import history_values
from training.history import (
    HistorySpec,
    history_columns,
    history_fields,
    history_tables,
    with_history_before,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = HistorySpec(by=("category",), prior=0.25, strength=4.0)
ITEMS = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["x", "x", "y"]})


def _t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _events(rows: list[tuple[str, str, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(u, i, _t(s), e) for u, i, s, e in rows],
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "event": pl.String,
        },
        orient="row",
    )


def _impressions(events: pl.DataFrame) -> pl.LazyFrame:
    return (
        events.lazy()
        .filter(pl.col("event") == "impression")
        .with_row_index("row")
        .join(ITEMS.lazy(), on="item_id", how="left")
    )


def _history(events: pl.DataFrame) -> pl.DataFrame:
    out = with_history_before(_impressions(events), events.lazy(), ITEMS, SPEC)
    return out.sort("row").collect()


def test_counts_only_events_strictly_before_the_impression() -> None:
    events = _events(
        [
            ("u1", "a", 0, "impression"),
            ("u1", "a", 5, "click"),
            ("u1", "b", 10, "impression"),  # x: one impression, one click before
            ("u1", "c", 10, "impression"),  # same time: neither sees the other
            ("u1", "c", 10, "click"),  # a click at t itself is not before t
            ("u1", "b", 20, "impression"),
            ("u2", "a", 1, "impression"),  # another user's events never count
            ("u2", "a", 2, "click"),
        ]
    )
    out = _history(events)
    got = out.select(
        "user_id",
        "item_id",
        "user_impressions",
        "user_clicks",
        "user_category_impressions",
        "user_category_clicks",
    ).rows()
    assert got == [
        ("u1", "a", 0.0, 0.0, 0.0, 0.0),
        ("u1", "b", 1.0, 1.0, 1.0, 1.0),
        ("u1", "c", 1.0, 1.0, 0.0, 0.0),
        ("u1", "b", 3.0, 2.0, 2.0, 1.0),
        ("u2", "a", 0.0, 0.0, 0.0, 0.0),
    ]
    # CTR: (clicks + 0.25 * 4) / (impressions + 4)
    assert out["user_ctr"].to_list() == pytest.approx([0.25, 2 / 5, 2 / 5, 3 / 7, 0.25])
    assert out["user_category_ctr"].to_list() == pytest.approx([0.25, 2 / 5, 0.25, 2 / 6, 0.25])


def test_an_item_without_the_attribute_gets_no_user_item_history() -> None:
    events = _events([("u1", "a", 0, "impression"), ("u1", "zz", 1, "impression")])
    out = _history(events)
    assert out["user_impressions"].to_list() == [0.0, 1.0]
    assert out["user_category_impressions"].to_list() == [0.0, None]


def _reference(events: pl.DataFrame) -> list[tuple[float, ...]]:
    """Brute force: for each impression, scan every event."""
    category = dict(ITEMS.iter_rows())
    rows = [{**e, "category": category.get(e["item_id"])} for e in events.to_dicts()]
    out = []
    for r in rows:
        if r["event"] != "impression":
            continue
        before = [e for e in rows if e["user_id"] == r["user_id"] and e["ts"] < r["ts"]]
        same = [e for e in before if e["category"] == r["category"]]
        values = []
        for group in (before, same):
            imp = float(sum(e["event"] == "impression" for e in group))
            clk = float(sum(e["event"] == "click" for e in group))
            v = history_values(imp, clk, SPEC.prior, SPEC.strength)
            values += [v["impressions"], v["clicks"], v["ctr"]]
        out.append(tuple(values))
    return out


_row = st.tuples(
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 6),
    st.sampled_from(["impression", "impression", "click", "purchase"]),
)


@given(st.lists(_row, min_size=1, max_size=25))
def test_matches_a_brute_force_scan_of_earlier_events(rows) -> None:
    events = _events([(u, i, float(s), e) for u, i, s, e in rows])
    out = _history(events)
    got = [tuple(r) for r in out.select(history_columns(SPEC)).rows()]
    assert got == _reference(events)


@given(st.lists(_row, min_size=1, max_size=20), st.lists(_row, max_size=8), st.integers(0, 6))
def test_events_at_or_after_t_never_change_a_row_before_t(rows, later, cut) -> None:
    events = _events([(u, i, float(s), e) for u, i, s, e in rows])
    after = _events([(u, i, float(cut + s), e) for u, i, s, e in later])
    full = _history(pl.concat([events, after])).filter(pl.col("ts") < _t(cut))
    alone = _history(events.filter(pl.col("ts") < _t(cut)))
    columns = ["user_id", "item_id", "ts", *history_columns(SPEC)]
    assert full.select(columns).sort(columns).equals(alone.select(columns).sort(columns))


def test_snapshot_counts_the_whole_log() -> None:
    events = _events(
        [
            ("u1", "a", 0, "impression"),
            ("u1", "a", 5, "click"),
            ("u1", "c", 9, "impression"),
            ("u1", "c", 9, "purchase"),  # not a history event
            ("u2", "b", 1, "impression"),
        ]
    )
    user, by = history_tables(events.lazy(), ITEMS, SPEC)
    assert user.rows() == [
        ("u1", 2.0, 1.0, pytest.approx((1 + 1) / 6)),
        ("u2", 1.0, 0.0, pytest.approx(1 / 5)),
    ]
    assert list(by) == ["category"]
    assert by["category"].rows() == [
        ("u1", "x", 1.0, 1.0, pytest.approx(2 / 5)),
        ("u1", "y", 1.0, 0.0, pytest.approx(1 / 5)),
        ("u2", "x", 1.0, 0.0, pytest.approx(1 / 5)),
    ]


def test_fields_standardise_on_training_rows_and_default_to_no_history() -> None:
    frame = pl.LazyFrame(
        {
            "split": ["train", "train", "test"],
            **{c: [0.0, 3.0, 99.0] for c in history_columns(SPEC) if not c.endswith("_ctr")},
            **{c: [0.2, 0.5, 0.9] for c in history_columns(SPEC) if c.endswith("_ctr")},
        }
    )
    fields = {f.name: f for f in history_fields(frame, SPEC)}
    assert list(fields) == history_columns(SPEC)
    imp = fields["user_impressions"]
    assert (imp.source, imp.transform, imp.by, imp.default) == ("user", "log1p", None, 0.0)
    assert imp.mean == pytest.approx(np.log1p(3.0) / 2)
    assert imp.std == pytest.approx(np.std([0.0, np.log1p(3.0)], ddof=1))
    ctr = fields["user_category_ctr"]
    assert (ctr.source, ctr.transform, ctr.by, ctr.default) == (
        "user_item",
        "logit",
        "category",
        SPEC.prior,
    )
    logits = np.log(np.array([0.2, 0.5]) / (1 - np.array([0.2, 0.5])))
    assert ctr.mean == pytest.approx(logits.mean())
