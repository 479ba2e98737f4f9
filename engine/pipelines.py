"""The decision pipelines, transport-free: Recommend (retrieve → filter → rank) and
RankAds (pCTR → auction). The gRPC servicer only converts messages around these."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.auction import gsp_auction
from engine.errors import InvalidArgument
from engine.models.base import ModelId
from engine.models.ctr import CTRModel
from engine.models.retrieval import RetrievalModel
from engine.settings import Settings

PERSONALISED = "personalised"
COLD_START = "cold_start_popularity"


@dataclass(frozen=True)
class Recommended:
    item_id: str
    score: float
    retrieval_score: float
    category: str
    price: float


@dataclass(frozen=True)
class Recommendation:
    items: list[Recommended]
    strategy: str
    models: list[ModelId]


@dataclass(frozen=True)
class AdRequest:
    ad_id: str
    bid: float
    features: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RankedAd:
    ad_id: str
    pctr: float
    bid: float
    expected_value: float
    slot: int
    price: float


@dataclass(frozen=True)
class Auction:
    ads: list[RankedAd]
    below_reserve: int
    models: list[ModelId]


def recommend(
    retrieval: RetrievalModel,
    ctr: CTRModel | None,
    settings: Settings,
    user_id: str,
    k: int,
    context: Mapping[str, str],
    categories: Sequence[str] = (),
    min_price: float | None = None,
    max_price: float | None = None,
    exclude: Sequence[str] = (),
) -> Recommendation:
    """The k items to show ``user_id``: retrieve candidates by embedding (popularity for an
    unknown user), excluding consumed/excluded items and honouring filters inside the scan,
    then order them by calibrated pCTR (retrieval score when no CTR model is loaded)."""
    if not user_id:
        raise InvalidArgument("user_id is required")
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be in [1, {settings.max_k}], got {k}")
    for name, bound in (("filters.min_price", min_price), ("filters.max_price", max_price)):
        if bound is not None and not math.isfinite(bound):
            raise InvalidArgument(f"{name} must be finite, got {bound}")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidArgument(
            f"filters.min_price {min_price} exceeds filters.max_price {max_price}"
        )
    row = retrieval.user_row.get(user_id)
    strategy = PERSONALISED if row is not None else COLD_START
    excluded = retrieval.item_rows(exclude)
    if row is not None:
        excluded = np.concatenate([retrieval.consumed(row), excluded])
    allowed = retrieval.allowed_mask(categories, min_price, max_price)
    n = max(k, settings.retrieval_candidates)
    rows, retrieval_scores = retrieval.retrieve(row, n, excluded, allowed)
    models = [retrieval.id]
    if ctr is not None and len(rows):
        item_ids = [retrieval.item_ids[r] for r in rows]
        cat, num = ctr.features(user_id, ctr.item_rows(item_ids), context)
        scores = ctr.predict(cat, num)
        # Highest pCTR first; the retrieval order (already deterministic) breaks ties.
        order = np.lexsort((np.arange(len(rows)), -scores))[:k]
        models.append(ctr.id)
    else:
        scores = retrieval_scores
        order = np.arange(min(k, len(rows)))
    items = [
        Recommended(
            item_id=retrieval.item_ids[rows[i]],
            score=float(scores[i]),
            retrieval_score=float(retrieval_scores[i]),
            category=retrieval.item_category[rows[i]],
            price=float(retrieval.item_price[rows[i]]),
        )
        for i in order
    ]
    return Recommendation(items=items, strategy=strategy, models=models)


def rank_ads(
    ctr: CTRModel,
    settings: Settings,
    user_id: str,
    ads: Sequence[AdRequest],
    slots: int,
    reserve_price: float,
    context: Mapping[str, str],
) -> Auction:
    """pCTR for every ad at or above the reserve, then a GSP auction over ``slots``."""
    if not user_id:
        raise InvalidArgument("user_id is required")
    if not ads:
        raise InvalidArgument("ads must not be empty")
    if len(ads) > settings.max_ads:
        raise InvalidArgument(f"at most {settings.max_ads} ads per request, got {len(ads)}")
    if slots < 1:
        raise InvalidArgument(f"slots must be >= 1, got {slots}")
    if not (math.isfinite(reserve_price) and reserve_price >= 0):
        raise InvalidArgument(f"reserve_price must be finite and >= 0, got {reserve_price}")
    seen: set[str] = set()
    for i, ad in enumerate(ads):
        if not ad.ad_id:
            raise InvalidArgument(f"ads[{i}].ad_id is required")
        if ad.ad_id in seen:
            raise InvalidArgument(f"ads[{i}].ad_id {ad.ad_id!r} appears twice")
        seen.add(ad.ad_id)
        if not (math.isfinite(ad.bid) and ad.bid >= 0):
            raise InvalidArgument(f"ads[{i}].bid must be finite and >= 0, got {ad.bid}")
    eligible = [ad for ad in ads if ad.bid >= reserve_price]
    below = len(ads) - len(eligible)
    if not eligible:
        return Auction(ads=[], below_reserve=below, models=[ctr.id])
    ad_ids = [ad.ad_id for ad in eligible]
    overrides = [ad.features for ad in eligible] if any(ad.features for ad in eligible) else None
    cat, num = ctr.features(user_id, ctr.item_rows(ad_ids), context, overrides)
    pctr = ctr.predict(cat, num)
    bids = np.array([ad.bid for ad in eligible], dtype=np.float64)
    result = gsp_auction(pctr, bids, ad_ids, slots, reserve_price)
    ranked = [
        RankedAd(
            ad_id=ad_ids[j],
            pctr=float(pctr[j]),
            bid=float(bids[j]),
            expected_value=float(result.expected_value[r]),
            slot=int(result.slot[r]),
            price=float(result.price[r]),
        )
        for r, j in enumerate(result.order)
    ]
    return Auction(ads=ranked, below_reserve=below, models=[ctr.id])
