"""The decision pipelines, transport-free: Recommend (retrieve → filter → rank) and
RankAds (pCTR → auction). The gRPC servicer only converts messages around these."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from engine.ads.bidding import ranked_mixed
from engine.auction import CPC, gsp_auction
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from engine.models.base import ModelId
from engine.models.ctr import CTRModel
from engine.models.profiles import Profile, ProfilesModel, UserSegment
from engine.models.retrieval import RetrievalModel
from engine.settings import Settings
from kernels import cap_per_category, mmr

if TYPE_CHECKING:
    from engine.decisions.draft import DecisionDraft

PERSONALISED = "personalised"
COLD_START_SEGMENT = "cold_start_segment"
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
class Auction:
    """The ranked eligible ads as parallel columns, best first (columns, not one object per
    ad: a 200-ad auction is on every page view)."""

    ad_ids: list[str]
    pctr: np.ndarray
    bid: np.ndarray
    expected_value: np.ndarray
    slot: np.ndarray  # 1-based for winners, 0 otherwise
    price: np.ndarray  # per click; 0 for non-winners
    below_reserve: int
    models: list[ModelId]
    # With bid types (engine.ads.bidding): each ad's type, each winner's expected charge.
    bid_type: np.ndarray | None = None
    expected_charge: np.ndarray | None = None
    # pCVR per ad when the CTR bundle has a conversion model (training.cvr), else None.
    pcvr: np.ndarray | None = None


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
    profiles: ProfilesModel | None = None,
    max_per_category: int = 0,
    mmr_lambda: float = 0.0,
    segment: UserSegment | None = None,
    personalise: bool = True,
    decision: DecisionDraft | None = None,
) -> Recommendation:
    """The k items to show ``user_id``: retrieve candidates by embedding (for a user the
    retrieval model doesn't know: the favourites of the user's K-means segment when profiled,
    else overall popularity), excluding consumed/excluded items and honouring filters inside
    the scan, then order them by calibrated pCTR (retrieval score when no CTR model is
    loaded). ``decision`` (the decision log's draft) records what was decided and may explore
    (engine.decisions; not with diversity re-ranking)."""
    if not user_id:
        raise InvalidArgument("user_id is required")
    # Without `personalise` (no consent, or a forgotten user: engine.privacy) nothing of the
    # user's is read: "" names no one, so every table answers its defaults.
    lookup_id = user_id if personalise else ""
    _check_k(k, settings)
    _check_price_range(min_price, max_price)
    if max_per_category < 0:
        raise InvalidArgument(f"diversity.max_per_category must be >= 0, got {max_per_category}")
    if not (math.isfinite(mmr_lambda) and 0.0 <= mmr_lambda <= 1.0):
        raise InvalidArgument(f"diversity.mmr_lambda must be in [0, 1], got {mmr_lambda}")
    row = retrieval.user_row.get(user_id) if personalise else None
    strategy, popularity = PERSONALISED, None
    models = [retrieval.id]
    if row is None:
        strategy = COLD_START
        segment = segment or UserSegment(profiles if personalise else None, user_id)
        cluster = segment.value[1]
        if profiles is not None and cluster >= 0:
            popularity = _cluster_popularity(retrieval, profiles, cluster)
            if popularity.any():
                strategy = COLD_START_SEGMENT
                models.append(profiles.id)
            else:
                popularity = None
    excluded = retrieval.item_rows(exclude)
    if row is not None:
        excluded = np.concatenate([retrieval.consumed(row), excluded])
    allowed = retrieval.allowed_mask(categories, min_price, max_price)
    n = max(k, settings.retrieval_candidates)
    rows, retrieval_scores = retrieval.retrieve(
        row, n, excluded, allowed, popularity, lookup_id or None
    )
    if ctr is not None and len(rows):
        cat, num = ctr.features(lookup_id, ctr_rows_of(retrieval, ctr)[rows], context)
        scores = ctr.predict(cat, num)
        # Highest pCTR first; the retrieval order (already deterministic) breaks ties.
        order = np.lexsort((np.arange(len(rows)), -scores))
        models.append(ctr.id)
        if decision is not None:
            decision.saw(ctr, cat, num)
    else:
        scores = retrieval_scores
        order = np.arange(len(rows))
    if decision is not None and decision.explores and not (max_per_category or mmr_lambda):
        known = ctr_rows_of(retrieval, ctr)[rows] >= 0 if ctr is not None else None
        order = decision.choose(scores, k, known=known)
    else:
        order = diversify(retrieval, rows, scores, order, k, max_per_category, mmr_lambda)
    if decision is not None:
        decision.ranked(retrieval.item_ids, rows, scores, order)
        decision.strategy = strategy
    # Columns to Python values once (numpy scalars cost a conversion per field and item).
    picked = rows[order]
    items = [
        Recommended(retrieval.item_ids[r], s, rs, retrieval.item_category[r], p)
        for r, s, rs, p in zip(
            picked.tolist(),
            scores[order].tolist(),
            retrieval_scores[order].tolist(),
            retrieval.item_price[picked].tolist(),
            strict=True,
        )
    ]
    return Recommendation(items=items, strategy=strategy, models=models)


def diversify(
    retrieval: RetrievalModel,
    rows: np.ndarray,
    scores: np.ndarray,
    order: np.ndarray,
    k: int,
    max_per_category: int,
    mmr_lambda: float,
) -> np.ndarray:
    """Positions (into rows/scores) of the final k: per-category caps, then MMR, over the
    ranked shortlist; plain truncation when neither is asked for."""
    if not max_per_category and not mmr_lambda:
        return order[:k]
    ranked = order
    if max_per_category:
        capped, _ = cap_per_category(
            ranked[None, :].astype(np.int64),
            scores[ranked][None, :].astype(np.float32),
            retrieval.item_category_code[rows].astype(np.int64),
            max_per_category,
            k if not mmr_lambda else len(ranked),
        )
        ranked = capped[0][capped[0] >= 0]
    if mmr_lambda:
        picked, _ = mmr(
            rows[ranked][None, :],
            scores[ranked][None, :].astype(np.float32),
            retrieval.item_unit,
            k,
            lam=mmr_lambda,
        )
        position = {int(r): p for p, r in zip(ranked, rows[ranked], strict=True)}
        ranked = np.array([position[int(r)] for r in picked[0] if r >= 0], dtype=np.int64)
    return ranked[:k]


def _check_k(k: int, settings: Settings) -> None:
    if not 1 <= k <= settings.max_k:
        raise InvalidArgument(f"k must be in [1, {settings.max_k}], got {k}")


def _check_price_range(min_price: float | None, max_price: float | None) -> None:
    for name, bound in (("filters.min_price", min_price), ("filters.max_price", max_price)):
        if bound is not None and not math.isfinite(bound):
            raise InvalidArgument(f"{name} must be finite, got {bound}")
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidArgument(
            f"filters.min_price {min_price} exceeds filters.max_price {max_price}"
        )


def rank_ads(
    ctr: CTRModel,
    settings: Settings,
    user_id: str,
    ad_ids: Sequence[str],
    bids: np.ndarray,
    overrides: Mapping[int, Mapping[str, str]],
    slots: int,
    reserve_price: float,
    context: Mapping[str, str],
    winners_only: bool = False,
    personalise: bool = True,
    bid_types: np.ndarray | None = None,
    reserve_ecpm: float = 0.0,
    decision: DecisionDraft | None = None,
) -> Auction:
    """pCTR for every ad bidding at least the reserve, then a GSP auction over ``slots``.
    ``overrides`` maps an ad's index to its feature overrides (most ads have none). The result
    holds every eligible ad, or with ``winners_only`` the winners (in slot order)."""
    if not user_id:
        raise InvalidArgument("user_id is required")
    n = len(ad_ids)
    if not n and bid_types is None:  # with bid types: campaign rules may have dropped them all
        raise InvalidArgument("ads must not be empty")
    if n > settings.max_ads:
        raise InvalidArgument(f"at most {settings.max_ads} ads per request, got {n}")
    if slots < 1:
        raise InvalidArgument(f"slots must be >= 1, got {slots}")
    if not (math.isfinite(reserve_price) and reserve_price >= 0):
        raise InvalidArgument(f"reserve_price must be finite and >= 0, got {reserve_price}")
    bad = ~(np.isfinite(bids) & (bids >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidArgument(f"ads[{i}].bid must be finite and >= 0, got {bids[i]}")
    if len(set(ad_ids)) != n or "" in ad_ids:
        seen: set[str] = set()
        for i, ad_id in enumerate(ad_ids):
            if not ad_id:
                raise InvalidArgument(f"ads[{i}].ad_id is required")
            if ad_id in seen:
                raise InvalidArgument(f"ads[{i}].ad_id {ad_id!r} appears twice")
            seen.add(ad_id)
    # The per-click reserve binds CPC bids; every type meets the eCPM one (engine.ads.bidding).
    eligible = bids >= reserve_price
    keep = np.flatnonzero(eligible if bid_types is None else eligible | (bid_types != CPC))
    below = n - len(keep)
    if len(keep) < n:
        ad_ids = [ad_ids[i] for i in keep]
        overrides = {j: overrides[i] for j, i in enumerate(keep) if i in overrides}
        bids = bids[keep]
        bid_types = bid_types[keep] if bid_types is not None else None
    if not len(keep):
        empty = np.zeros(0)
        return Auction([], empty, empty, empty, empty.astype(np.int32), empty, below, [ctr.id])
    per_row = [overrides.get(j, {}) for j in range(len(ad_ids))] if overrides else None
    item_rows = ctr.item_rows(ad_ids)
    # Without `personalise`, "": no stored features or live history of the user.
    cat, num = ctr.features(user_id if personalise else "", item_rows, context, per_row)
    pctr, pcvr = ctr.score(cat, num)
    if bid_types is not None or reserve_ecpm:  # CPA/CPM bids, or an eCPM reserve
        types = bid_types if bid_types is not None else np.zeros(len(bids), dtype=np.int64)
        columns, under = ranked_mixed(
            ctr, cat, num, pctr, ad_ids, bids, types, slots, reserve_price, reserve_ecpm,
            winners_only,
        )  # fmt: skip
        if pcvr is not None:  # in the auction's order (ranked_mixed reorders by ad id)
            at = {a: i for i, a in enumerate(ad_ids)}
            columns["pcvr"] = pcvr[[at[a] for a in columns["ad_ids"]]]
        return Auction(**columns, below_reserve=below + under, models=[ctr.id])
    if decision is not None and decision.explores:  # engine.decisions: explored slots
        result = decision.auction(pctr, bids, ad_ids, slots, reserve_price, item_rows >= 0)
    else:
        result = gsp_auction(pctr, bids, ad_ids, slots, reserve_price)
    if decision is not None:
        decision.saw(ctr, cat, num)
        decision.auctioned(ad_ids, pctr, bids, result)
    keep = min(slots, len(result.order)) if winners_only else len(result.order)
    order = result.order[:keep]
    return Auction(
        ad_ids=[ad_ids[j] for j in order],
        pctr=pctr[order],
        bid=bids[order],
        expected_value=result.expected_value[:keep],
        slot=result.slot[:keep],
        price=result.price[:keep],
        below_reserve=below,
        models=[ctr.id],
        pcvr=pcvr[order] if pcvr is not None else None,
    )


@dataclass(frozen=True)
class AudienceMember:
    user_id: str
    score: float
    rfm_segment: str
    cluster: int


@dataclass(frozen=True)
class AudienceResult:
    users: list[AudienceMember]
    eligible_users: int
    models: list[ModelId]


def _item_result(
    retrieval: RetrievalModel, rows: np.ndarray, scores: np.ndarray
) -> list[Recommended]:
    return [
        Recommended(
            item_id=retrieval.item_ids[r],
            score=float(s),
            retrieval_score=float(s),
            category=retrieval.item_category[r],
            price=float(retrieval.item_price[r]),
        )
        for r, s in zip(rows, scores, strict=True)
    ]


def similar_items(
    retrieval: RetrievalModel,
    settings: Settings,
    item_id: str,
    k: int,
    categories: Sequence[str] = (),
    min_price: float | None = None,
    max_price: float | None = None,
) -> tuple[list[Recommended], list[ModelId]]:
    """The k items most similar to ``item_id`` (cosine of latent item embeddings)."""
    if not item_id:
        raise InvalidArgument("item_id is required")
    _check_k(k, settings)
    _check_price_range(min_price, max_price)
    row = retrieval.item_row.get(item_id)
    if row is None:
        raise NotFound(
            f"item {item_id!r} is not in the catalogue of {retrieval.id.name} v{retrieval.id.version}"
        )
    rows, scores = retrieval.similar(
        row, k, retrieval.allowed_mask(categories, min_price, max_price)
    )
    return _item_result(retrieval, rows, scores), [retrieval.id]


def audience(
    retrieval: RetrievalModel,
    profiles: ProfilesModel | None,
    settings: Settings,
    item_ids: Sequence[str],
    n: int,
    segments: Sequence[str] = (),
    include_consumers: bool = False,
) -> AudienceResult:
    """The n users most likely to respond to an offer (one item or a campaign of items: the
    mean of their embeddings), optionally only within RFM / K-means segments."""
    if not item_ids:
        raise InvalidArgument("item_ids must name at least one item")
    if not 1 <= n <= settings.max_audience:
        raise InvalidArgument(f"n must be in [1, {settings.max_audience}], got {n}")
    rows = []
    for i, item in enumerate(item_ids):
        row = retrieval.item_row.get(item)
        if row is None:
            raise NotFound(f"item_ids[{i}]: item {item!r} is not in the catalogue")
        rows.append(row)
    item_rows = np.array(rows, dtype=np.int64)
    target = np.asarray(retrieval.item_embeddings[item_rows]).mean(axis=0)
    models = [retrieval.id]
    allowed = None
    profile_of = _profile_rows(retrieval, profiles) if profiles is not None else None
    if segments:
        if profiles is None or profile_of is None:
            raise FailedPrecondition("segment filters need a profiles model; none is loaded")
        members = profiles.members(segments)
        allowed = (profile_of >= 0) & members[np.maximum(profile_of, 0)]
    if profiles is not None:
        models.append(profiles.id)
    eligible = int(allowed.sum()) if allowed is not None else len(retrieval.user_ids)
    exclude = np.zeros(0, dtype=np.int64) if include_consumers else retrieval.consumers(item_rows)
    user_rows, scores = retrieval.audience(target, n, exclude, allowed)
    users = []
    for r, s in zip(user_rows, scores, strict=True):
        user_id = retrieval.user_ids[r]
        segment, cluster = profiles.segment_of(user_id) if profiles is not None else ("", -1)
        users.append(AudienceMember(user_id, float(s), segment, cluster))
    return AudienceResult(users=users, eligible_users=eligible, models=models)


def ctr_rows_of(retrieval: RetrievalModel, ctr: CTRModel) -> np.ndarray:
    """For each retrieval item row, the CTR model's item row (-1: unknown to it); built once
    per pair of loaded models and owned by the retrieval model."""
    return retrieval.derived.get(ctr, "ctr_rows", lambda: ctr.item_rows(retrieval.item_ids))


def _profile_rows(retrieval: RetrievalModel, profiles: ProfilesModel) -> np.ndarray:
    """For each retrieval user row, the user's profile row (-1: no profile)."""

    def build() -> np.ndarray:
        get = profiles.user_row.get
        return np.fromiter(
            map(get, retrieval.user_ids, repeat(-1)), dtype=np.int64, count=len(retrieval.user_ids)
        )

    return retrieval.derived.get(profiles, "profile_rows", build)


def _cluster_popularity(
    retrieval: RetrievalModel, profiles: ProfilesModel, cluster: int
) -> np.ndarray:
    def build() -> np.ndarray:
        profile_of = _profile_rows(retrieval, profiles)
        in_cluster = (profile_of >= 0) & (profiles.cluster[np.maximum(profile_of, 0)] == cluster)
        return retrieval.popularity_among(np.flatnonzero(in_cluster))

    return retrieval.derived.get(profiles, ("cluster_popularity", cluster), build)


def profile(profiles: ProfilesModel, user_id: str) -> Profile:
    if not user_id:
        raise InvalidArgument("user_id is required")
    return profiles.profile(user_id)
