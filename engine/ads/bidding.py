"""The RankAds auction over mixed bid types: pCVR from the served model when CPA ads bid, the
eCPM reserve, and the columns of the answer (engine.pipelines calls this when a request
carries bid types or an eCPM reserve, or when campaigns need each winner's expected charge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.auction import CPA, mixed_auction, units_per_impression
from engine.errors import FailedPrecondition


def conversion_rates(ctr: Any, cat: np.ndarray, num: np.ndarray) -> np.ndarray | None:
    """pCVR per candidate from the served CTR model, None when it serves none. The contract
    with the conversion model's side: a CTR model that can, has ``predict_pcvr(cat, num)``
    returning float pCVR [n] (or None when its bundle has no conversion output)."""
    predict = getattr(ctr, "predict_pcvr", None)
    return predict(cat, num) if predict is not None else None


def ranked_mixed(
    ctr: Any,
    cat: np.ndarray,
    num: np.ndarray,
    pctr: np.ndarray,
    ad_ids: Sequence[str],
    bids: np.ndarray,
    bid_types: np.ndarray,
    slots: int,
    reserve_price: float,
    reserve_ecpm: float,
    winners_only: bool,
) -> tuple[dict[str, Any], int]:
    """The Auction columns of one mixed auction, and how many ads the eCPM reserve dropped."""
    pcvr = None
    if (bid_types == CPA).any():
        pcvr = conversion_rates(ctr, cat, num)
        if pcvr is None:
            first = ad_ids[int(np.argmax(bid_types == CPA))]
            raise FailedPrecondition(
                f"ad {first!r} bids CPA, which needs pCVR, but CTR model {ctr.id.name!r} "
                f"v{ctr.id.version} serves no conversion model (pCVR); bid CPC or CPM, or "
                "serve a CTR bundle with a pCVR output"
            )
    below = 0
    if reserve_ecpm > 0:
        ok = bids * units_per_impression(bid_types, pctr, pcvr) * 1000.0 >= reserve_ecpm
        below = int(len(ok) - ok.sum())
        if below:
            keep = np.flatnonzero(ok)
            ad_ids = [ad_ids[i] for i in keep]
            pctr, bids, bid_types = pctr[keep], bids[keep], bid_types[keep]
            pcvr = pcvr[keep] if pcvr is not None else None
    r = mixed_auction(pctr, pcvr, bids, bid_types, ad_ids, slots, reserve_price, reserve_ecpm)
    n = min(slots, len(r.order)) if winners_only else len(r.order)
    order = r.order[:n]
    columns = {
        "ad_ids": [ad_ids[j] for j in order],
        "pctr": pctr[order],
        "bid": bids[order],
        "expected_value": r.expected_value[:n],
        "slot": r.slot[:n],
        "price": r.price[:n],
        "bid_type": bid_types[order],
        "expected_charge": r.expected_charge[:n],
    }
    return columns, below
