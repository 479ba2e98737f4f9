"""GSP auction on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from engine.auction import gsp_auction


def test_hand_computed_gsp() -> None:
    pctr = np.array([0.1, 0.2, 0.05])
    bid = np.array([2.0, 0.5, 10.0])  # ev: 0.2, 0.1, 0.5
    r = gsp_auction(pctr, bid, ["a", "b", "c"], slots=2, reserve=0.0)
    assert r.order.tolist() == [2, 0, 1]
    assert r.slot.tolist() == [1, 2, 0]
    # c pays a's ev / c's pctr = 0.2 / 0.05; a pays b's ev / a's pctr = 0.1 / 0.1.
    assert r.price.tolist() == pytest.approx([4.0, 1.0, 0.0])


def test_last_winner_pays_reserve_and_ties_break_by_id() -> None:
    r = gsp_auction(np.array([0.5, 0.5]), np.array([1.0, 1.0]), ["z", "a"], slots=3, reserve=0.3)
    assert r.order.tolist() == [1, 0]  # equal ev: "a" before "z"
    assert r.slot.tolist() == [1, 2]
    assert r.price.tolist() == pytest.approx([1.0, 0.3])


def test_price_never_exceeds_bid() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = rng.integers(1, 20)
        pctr, bid = rng.random(n), rng.random(n) * 5
        r = gsp_auction(
            pctr, bid, [str(i) for i in range(n)], slots=int(rng.integers(1, 5)), reserve=0.0
        )
        won = r.slot > 0
        assert (r.price[won] <= bid[r.order][won] + 1e-12).all()
        assert (np.diff(r.expected_value) <= 0).all()
