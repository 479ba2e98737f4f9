"""Ad auction: rank by expected value (pCTR x bid), fill slots, charge generalised second price."""

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
