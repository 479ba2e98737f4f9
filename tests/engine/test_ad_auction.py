"""The mixed-bid-type auction (CPC, CPA, CPM) on worked examples: one ranking by expected value
per impression, second prices generalised to each type's unit, reserves in eCPM."""

from __future__ import annotations

import numpy as np
import pytest

from engine.ads.bidding import ranked_mixed
from engine.auction import CPA, CPC, CPM, gsp_auction, mixed_auction
from engine.errors import FailedPrecondition
from engine.models.base import ModelId


def test_worked_example_one_auction_over_three_bid_types() -> None:
    # a: CPC 2.00 per click, pCTR 0.05              -> 0.100 per impression (eCPM 100)
    # b: CPA 40 per conversion, pCTR 0.04, pCVR 0.05 -> 40 x 0.002 = 0.080 (eCPM 80)
    # c: CPM 60 per thousand                         -> 0.060 (eCPM 60)
    # d: CPC 1.00, pCTR 0.03                         -> 0.030 (eCPM 30)
    pctr = np.array([0.05, 0.04, 0.9, 0.03])  # c's pCTR plays no part: CPM pays per impression
    pcvr = np.array([0.5, 0.05, 0.5, 0.5])  # only b's pCVR does: b is the CPA ad
    bid = np.array([2.0, 40.0, 60.0, 1.0])
    kind = np.array([CPC, CPA, CPM, CPC])
    r = mixed_auction(pctr, pcvr, bid, kind, ["a", "b", "c", "d"], slots=3)
    assert r.order.tolist() == [0, 1, 2, 3]
    assert r.expected_value.tolist() == pytest.approx([0.1, 0.08, 0.06, 0.03])
    assert r.slot.tolist() == [1, 2, 3, 0]
    # a pays b's value per its clicks: 0.08 / 0.05 = 1.60 per click.
    # b pays c's value per its conversions: 0.06 / (0.04 x 0.05) = 30 per conversion.
    # c pays d's value per thousand impressions: 0.03 x 1000 = 30 CPM.
    assert r.price.tolist() == pytest.approx([1.6, 30.0, 30.0, 0.0])
    # Each winner's expected charge per impression is the next ad's value (GSP's property).
    assert r.expected_charge.tolist() == pytest.approx([0.08, 0.06, 0.03, 0.0])


def test_reserve_in_ecpm_floors_every_type_in_its_own_unit() -> None:
    # With reserve eCPM 50 the last winner (c, nobody below it) pays the reserve: 50 CPM; a CPA
    # winner with no ad below pays 0.05 / (pCTR x pCVR) per conversion, a CPC one 0.05 / pCTR.
    pctr, pcvr = np.array([0.05, 0.04, 0.5]), np.array([0.5, 0.05, 0.5])
    bid, kind = np.array([2.0, 40.0, 60.0]), np.array([CPC, CPA, CPM])
    r = mixed_auction(pctr, pcvr, bid, kind, ["a", "b", "c"], slots=3, reserve_ecpm=50.0)
    assert r.price.tolist() == pytest.approx([1.6, 30.0, 50.0])
    r = mixed_auction(pctr[1:2], pcvr[1:2], bid[1:2], kind[1:2], ["b"], 1, reserve_ecpm=50.0)
    assert r.price.tolist() == pytest.approx([0.05 / 0.002])  # 25 per conversion
    r = mixed_auction(pctr[:1], pcvr[:1], bid[:1], kind[:1], ["a"], 1, reserve_ecpm=50.0)
    assert r.price.tolist() == pytest.approx([1.0])  # 0.05 / 0.05 per click
    # The per-click reserve applies to CPC ads only, and a price never exceeds the bid.
    r = mixed_auction(pctr, pcvr, bid, kind, ["a", "b", "c"], slots=3, reserve_cpc=1.8)
    assert r.price.tolist() == pytest.approx([1.8, 30.0, 0.0])
    r = mixed_auction(pctr[:1], pcvr[:1], bid[:1], kind[:1], ["a"], 1, reserve_cpc=5.0)
    assert r.price.tolist() == pytest.approx([2.0])


def test_cpc_only_is_the_plain_gsp() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(1, 30))
        pctr, bid = rng.random(n), rng.random(n) * 3
        ids = [f"ad{i}" for i in range(n)]
        slots = int(rng.integers(1, 5))
        plain = gsp_auction(pctr, bid, ids, slots, 0.2)
        mixed = mixed_auction(pctr, None, bid, np.zeros(n, dtype=np.int64), ids, slots, 0.2)
        assert mixed.order.tolist() == plain.order.tolist()
        assert mixed.price == pytest.approx(plain.price)


def test_prices_keep_the_rank_and_never_exceed_bids() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        n = int(rng.integers(2, 25))
        pctr, pcvr = rng.random(n) * 0.2, rng.random(n) * 0.3
        kind = rng.integers(0, 3, n)
        bid = np.where(
            kind == CPM, rng.random(n) * 100, np.where(kind == CPA, 50, 2) * rng.random(n)
        )
        r = mixed_auction(pctr, pcvr, bid, kind, [str(i) for i in range(n)], slots=3)
        won = r.slot > 0
        assert (r.price[won] <= bid[r.order][won] + 1e-9).all()
        # Bidding the price instead of the bid keeps the winner at or above the next ad.
        nxt = np.append(r.expected_value[1:], 0.0)
        assert (r.price[won] * r.units[won] >= nxt[won] - 1e-12).all()
        assert r.expected_charge[won] == pytest.approx(nxt[won])


def test_cpa_without_pcvr_is_refused() -> None:
    with pytest.raises(ValueError, match="pCVR"):
        mixed_auction(np.array([0.1]), None, np.array([5.0]), np.array([CPA]), ["a"], 1)


def test_cpa_with_a_model_that_serves_no_pcvr_names_the_missing_conversion_model() -> None:
    class NoConversionModel:  # the served CTR model's side of the contract, without a pCVR
        id = ModelId("ctr", 3, "ctr", "")

        def predict_pcvr(self, cat: np.ndarray, num: np.ndarray) -> None:
            return None

    with pytest.raises(FailedPrecondition, match="conversion model") as error:
        ranked_mixed(
            NoConversionModel(), np.zeros((2, 1)), np.zeros((2, 1)), np.array([0.1, 0.2]),
            ["a", "b"], np.array([1.0, 20.0]), np.array([CPC, CPA]), 1, 0.0, 0.0, False,
        )  # fmt: skip
    assert "'b' bids CPA" in str(error.value) and "'ctr' v3" in str(error.value)
