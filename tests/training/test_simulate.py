"""The simulator is deterministic and its log follows its own ground truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from training.simulate import (
    DEVICES,
    GroundTruth,
    SimulatorConfig,
    item_index,
    simulate,
    user_index,
)

SMALL = SimulatorConfig(users=200, items=80, days=10, seed=3)


def test_same_seed_same_log() -> None:
    a, items_a, users_a, _ = simulate(SMALL)
    b, items_b, users_b, _ = simulate(SMALL)
    assert a.equals(b) and items_a.equals(items_b) and users_a.equals(users_b)
    c, *_ = simulate(SimulatorConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not a.equals(c)


def test_log_shape_and_schema() -> None:
    events, items, users, _ = simulate(SMALL)
    assert events.columns == [
        "user_id",
        "item_id",
        "ts",
        "event",
        "value",
        "price",
        "position",
        "request_id",
        "device",
    ]
    assert set(events["event"].unique()) == {"impression", "click", "purchase"}
    assert events["ts"].is_sorted()
    imp = events.filter(pl.col("event") == "impression")
    assert imp["position"].min() == 1 and imp["position"].max() == SMALL.slate_size
    # Every click and purchase follows an impression of the same item in the same request.
    shown = imp.select("request_id", "item_id").unique()
    for kind in ("click", "purchase"):
        acted = events.filter(pl.col("event") == kind).select("request_id", "item_id")
        assert acted.join(shown, on=["request_id", "item_id"], how="anti").height == 0
    # Purchases carry their revenue; impressions carry none.
    buys = events.filter(pl.col("event") == "purchase")
    assert (buys["value"] == buys["price"]).all()
    assert imp["value"].null_count() == imp.height
    assert set(events["device"].unique()) <= set(DEVICES)
    assert items.height == SMALL.items and users.height == SMALL.users


def test_clicks_follow_the_ground_truth_click_model() -> None:
    events, _, _, gt = simulate(SimulatorConfig(users=400, items=100, days=20, seed=5))
    imp = events.filter(pl.col("event") == "impression")
    clicks = (
        events.filter(pl.col("event") == "click")
        .select("request_id", "item_id")
        .with_columns(pl.lit(1).alias("y"))
    )
    imp = imp.join(clicks, on=["request_id", "item_id"], how="left").with_columns(
        pl.col("y").fill_null(0)
    )
    device = (
        imp["device"]
        .replace_strict({d: i for i, d in enumerate(DEVICES)}, return_dtype=pl.Int64)
        .to_numpy()
    )
    p = gt.click_probability(
        user_index(imp["user_id"]), item_index(imp["item_id"]), imp["position"].to_numpy(), device
    )
    y = imp["y"].to_numpy()
    # Observed and expected click counts agree overall and per position (binomial noise).
    assert y.sum() == pytest.approx(p.sum(), rel=0.05)
    pos = imp["position"].to_numpy()
    for slot in (1, SimulatorConfig().slate_size):
        assert y[pos == slot].mean() == pytest.approx(p[pos == slot].mean(), abs=0.02)
    # Position bias: the top slot is clicked more than the last.
    assert y[pos == 1].mean() > y[pos == pos.max()].mean()


def test_ground_truth_round_trips(tmp_path) -> None:
    _, _, _, gt = simulate(SMALL)
    gt.save(tmp_path)
    back = GroundTruth.load(tmp_path)
    assert back.config == gt.config
    np.testing.assert_array_equal(back.user_taste, gt.user_taste)
    u, i = np.array([0, 1]), np.array([2, 3])
    np.testing.assert_allclose(
        back.click_probability(u, i, np.array([1, 2]), np.array([0, 1])),
        gt.click_probability(u, i, np.array([1, 2]), np.array([0, 1])),
    )
