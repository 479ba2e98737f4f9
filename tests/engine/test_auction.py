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


def test_a_zero_pctr_ad_ranks_last_and_the_ad_above_it_pays_the_reserve() -> None:
    # ev: a 0.2, z 0 (pCTR 0, however high its bid). a pays max(reserve, 0 / 0.2); z, a winner
    # that can never be clicked, is charged per click at the reserve (nothing, in expectation).
    r = gsp_auction(np.array([0.2, 0.0]), np.array([1.0, 50.0]), ["a", "z"], slots=2, reserve=0.1)
    assert r.order.tolist() == [0, 1]
    assert r.expected_value.tolist() == [pytest.approx(0.2), 0.0]
    assert r.price.tolist() == pytest.approx([0.1, 0.1])
    # Every ad at pCTR 0: all tie at 0 (ordered by id) and nobody pays more than the reserve.
    r = gsp_auction(np.zeros(3), np.array([3.0, 1.0, 2.0]), ["c", "a", "b"], slots=3, reserve=0.0)
    assert r.order.tolist() == [1, 2, 0]
    assert r.price.tolist() == [0.0, 0.0, 0.0]


def test_a_reserve_above_a_bid_never_charges_more_than_the_bid() -> None:
    # The pipeline drops ads bidding under the reserve before the auction; the auction itself
    # still caps every price at the ad's own bid, even when the reserve lies above it.
    r = gsp_auction(np.array([0.5, 0.5]), np.array([2.0, 0.4]), ["a", "b"], slots=2, reserve=1.0)
    assert r.order.tolist() == [0, 1]
    assert r.price.tolist() == pytest.approx([1.0, 0.4])


def test_ties_across_many_ads_order_by_id_and_each_winner_pays_its_bid() -> None:
    n = 60
    ids = [f"ad{i}" for i in range(n)]  # string order: ad0, ad1, ad10, ad11, ...
    r = gsp_auction(np.full(n, 0.2), np.full(n, 0.5), ids[::-1], slots=10, reserve=0.0)
    ids = ids[::-1]  # given in reverse: the order comes from the ids, not the input order
    assert [ids[i] for i in r.order] == sorted(ids)
    assert r.slot.tolist() == [*range(1, 11), *[0] * (n - 10)]
    # The next ad's expected value equals its own: the price that keeps the rank is the bid.
    assert r.price[:10].tolist() == pytest.approx([0.5] * 10)
    assert (r.price[10:] == 0).all()
