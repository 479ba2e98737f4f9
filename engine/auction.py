"""Ad auctions: rank by expected value per impression (pCTR x bid, or per bid type), fill
slots, charge generalised second prices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AuctionResult:
    """Parallel arrays over the eligible ads, in rank order."""

    order: np.ndarray  # indices into the eligible ads, best first
    expected_value: np.ndarray
    slot: np.ndarray  # 1-based for winners, 0 otherwise
    price: np.ndarray  # per click; 0 for non-winners


def gsp_auction(
    pctr: np.ndarray, bid: np.ndarray, ad_ids: Sequence[str], slots: int, reserve: float
) -> AuctionResult:
    """Rank by pctr x bid (ties: lower ad_id first). The winner of slot i pays the lowest bid
    that would keep its rank: max(reserve, ev[i+1] / pctr[i]), never more than its bid."""
    ev = pctr.astype(np.float64) * bid
    order = np.argsort(-ev, kind="stable")
    ev_sorted = ev[order]
    if len(order) > 1 and (ev_sorted[1:] == ev_sorted[:-1]).any():
        # Equal expected values: the lower ad_id first, so the outcome is deterministic (ranking
        # the ids, an object sort, only when a tie needs it). lexsort: last key is primary.
        # One Python sort of the (unique) ids ranks them: half the cost of two object argsorts.
        id_rank = np.empty(len(ad_ids), dtype=np.int64)
        id_rank[sorted(range(len(ad_ids)), key=ad_ids.__getitem__)] = np.arange(len(ad_ids))
        order = np.lexsort((id_rank, -ev))
        ev_sorted = ev[order]
    n = len(order)
    winners = min(slots, n)
    slot = np.zeros(n, dtype=np.int32)
    slot[:winners] = np.arange(1, winners + 1)
    price = np.zeros(n, dtype=np.float64)
    p = pctr[order].astype(np.float64)
    for i in range(winners):
        next_ev = ev_sorted[i + 1] if i + 1 < n else 0.0
        charge = next_ev / p[i] if p[i] > 0 else 0.0
        price[i] = min(max(reserve, charge), bid[order[i]])
    return AuctionResult(order=order, expected_value=ev_sorted, slot=slot, price=price)


# Bid types, as the wire's reachrank.v1.BidType numbers.
CPC, CPA, CPM = 0, 1, 2
BID_TYPE_NAMES = ("cpc", "cpa", "cpm")


@dataclass(frozen=True)
class MixedAuctionResult:
    """A :class:`AuctionResult` over ads of several bid types, plus what each winner's
    impression costs its advertiser in expectation (price x units per impression)."""

    order: np.ndarray
    expected_value: np.ndarray  # per impression (eCPM / 1000)
    slot: np.ndarray
    price: np.ndarray  # in each ad's own unit: per click, per conversion, per 1000 impressions
    expected_charge: np.ndarray  # per impression; 0 for non-winners
    units: np.ndarray  # expected billed units per impression, in rank order


def units_per_impression(
    bid_type: np.ndarray, pctr: np.ndarray, pcvr: np.ndarray | None
) -> np.ndarray:
    """What one impression is expected to bill, in the unit the bid is for: clicks (pCTR),
    conversions (pCTR x pCVR) or thousands of impressions (1/1000)."""
    units = pctr.astype(np.float64)
    if pcvr is not None:
        units = np.where(bid_type == CPA, units * pcvr, units)
    return np.where(bid_type == CPM, 1e-3, units)


def mixed_auction(
    pctr: np.ndarray,
    pcvr: np.ndarray | None,
    bid: np.ndarray,
    bid_type: np.ndarray,
    ad_ids: Sequence[str],
    slots: int,
    reserve_cpc: float = 0.0,
    reserve_ecpm: float = 0.0,
) -> MixedAuctionResult:
    """One auction over CPC, CPA and CPM ads ranked by expected value per impression,
    ev = bid x units (units: pCTR, pCTR x pCVR, 1/1000; ``pcvr`` may be None only when no ad
    is CPA). The winner of slot i pays, in its own unit, the lowest bid that keeps its rank:
    ev[i+1] / units[i], raised to the reserves (``reserve_ecpm`` / 1000 / units for every
    type, ``reserve_cpc`` per click for CPC ads) and never above its bid. A GSP whose
    "pCTR" is each ad's units per impression: for CPC-only auctions it is :func:`gsp_auction`."""
    if pcvr is None and (bid_type == CPA).any():
        raise ValueError("CPA bids need pCVR")
    units = units_per_impression(bid_type, pctr, pcvr)
    base = gsp_auction(units, bid, ad_ids, slots, 0.0)
    order = base.order
    u = units[order]
    price = base.price
    if reserve_ecpm > 0 or reserve_cpc > 0:  # (no reserve: GSP's prices stand as they are)
        won = base.slot > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            floor = np.where(u > 0, reserve_ecpm / 1000.0 / u, 0.0)
        floor = np.where(bid_type[order] == CPC, np.maximum(floor, reserve_cpc), floor)
        price = np.where(won, np.minimum(np.maximum(price, floor), bid[order]), 0.0)
    return MixedAuctionResult(
        order=order,
        expected_value=base.expected_value,
        slot=base.slot,
        price=price,
        expected_charge=price * u,
        units=u,
    )
