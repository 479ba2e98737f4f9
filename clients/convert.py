"""Build `reachrank.v1` requests from plain Python values and turn responses into `clients.types`.

Transport-free, so the sync and asyncio clients (and tests) share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from reachrank.v1 import feedback_pb2, models_pb2, privacy_pb2, ranking_pb2

from clients.tensors import from_tensor, to_tensor
from clients.types import (
    AdAuction,
    AdBid,
    Audience,
    AudienceMember,
    Experiment,
    FeedbackEvent,
    Guardrail,
    ModelInfo,
    ModelStatus,
    Profile,
    RankedAd,
    Recommendation,
    RecommendedItem,
    ScoreResult,
    Shadow,
    SimilarItems,
    Variant,
)


def _text_map(values: Mapping[str, Any] | None) -> dict[str, str]:
    # Numeric feature and context values travel as decimal text (proto contract).
    return {str(key): str(value) for key, value in (values or {}).items()}


def _as_list(values: str | Iterable[str] | None) -> list[str]:
    # A lone string is one id, not a sequence of one-letter ids.
    return [values] if isinstance(values, str) else list(values or ())


def filters(
    categories: str | Iterable[str] | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
) -> ranking_pb2.Filters:
    message = ranking_pb2.Filters(categories=_as_list(categories))
    # Optional fields: left unset (not 0) when no bound is given.
    if min_price is not None:
        message.min_price = min_price
    if max_price is not None:
        message.max_price = max_price
    return message


CONSENTS = {
    "": privacy_pb2.CONSENT_DEFAULT,
    "personalised": privacy_pb2.CONSENT_PERSONALISED,
    "context_only": privacy_pb2.CONSENT_CONTEXT_ONLY,
}


def consent_value(consent: str | None) -> int:
    """The wire value of a consent name ("personalised", "context_only"; None or "": the
    server's default)."""
    try:
        return CONSENTS[consent or ""]
    except KeyError:
        raise ValueError(
            f"consent must be one of {sorted(c for c in CONSENTS if c)}, got {consent!r}"
        ) from None


def recommend_request(
    user_id: str,
    k: int,
    *,
    context: Mapping[str, Any] | None = None,
    categories: str | Iterable[str] | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
    exclude: str | Iterable[str] | None = None,
    max_per_category: int = 0,
    mmr_lambda: float = 0.0,
    consent: str | None = None,
) -> ranking_pb2.RecommendRequest:
    return ranking_pb2.RecommendRequest(
        consent=consent_value(consent),
        user_id=user_id,
        k=k,
        context=_text_map(context),
        filters=filters(categories, min_price, max_price),
        exclude=_as_list(exclude),
        diversity=ranking_pb2.Diversity(max_per_category=max_per_category, mmr_lambda=mmr_lambda),
    )


def similar_items_request(
    item_id: str,
    k: int,
    *,
    categories: str | Iterable[str] | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
) -> ranking_pb2.SimilarItemsRequest:
    return ranking_pb2.SimilarItemsRequest(
        item_id=item_id, k=k, filters=filters(categories, min_price, max_price)
    )


def audience_request(
    item_ids: str | Iterable[str],
    n: int,
    *,
    segments: str | Iterable[str] | None = None,
    include_consumers: bool = False,
) -> ranking_pb2.AudienceRequest:
    return ranking_pb2.AudienceRequest(
        item_ids=_as_list(item_ids),
        n=n,
        segments=_as_list(segments),
        include_consumers=include_consumers,
    )


def profile_request(user_id: str) -> ranking_pb2.ProfileRequest:
    return ranking_pb2.ProfileRequest(user_id=user_id)


def as_ad_bid(ad: AdBid | Mapping[str, Any]) -> AdBid:
    """Accept an `AdBid` or a dict with keys ad_id, bid and optionally features."""
    if isinstance(ad, AdBid):
        return ad
    unknown = set(ad) - {"ad_id", "bid", "features"}
    if unknown or "ad_id" not in ad or "bid" not in ad:
        raise ValueError(
            f"an ad needs keys ad_id and bid (and optionally features), got {sorted(ad)}"
        )
    return AdBid(str(ad["ad_id"]), float(ad["bid"]), ad.get("features") or {})


def rank_ads_request(
    user_id: str,
    ads: Iterable[AdBid | Mapping[str, Any]],
    *,
    slots: int = 1,
    reserve_price: float = 0.0,
    context: Mapping[str, Any] | None = None,
    all_ranked: bool = False,
    consent: str | None = None,
) -> ranking_pb2.RankAdsRequest:
    """The candidates as columns (`RankAdsRequest.candidates`): ids, packed bids, and feature
    overrides only for the ads that carry any."""
    bids = list(map(as_ad_bid, ads))
    request = ranking_pb2.RankAdsRequest(
        consent=consent_value(consent),
        user_id=user_id,
        context=_text_map(context),
        slots=slots,
        reserve_price=reserve_price,
        all_ranked=all_ranked,
    )
    columns = request.candidates
    columns.SetInParent()  # an empty auction is still the columnar form (and refused as empty)
    columns.ad_ids.extend([b.ad_id for b in bids])
    columns.bids.extend([b.bid for b in bids])
    for index, bid in enumerate(bids):
        if bid.features:
            columns.features[index].values.update(_text_map(bid.features))
    return request


def score_request(
    model: str, inputs: Mapping[str, np.ndarray], version: int = 0
) -> ranking_pb2.ScoreRequest:
    return ranking_pb2.ScoreRequest(
        model=model,
        version=version,
        inputs={name: to_tensor(array) for name, array in inputs.items()},
    )


def model_info(ref: ranking_pb2.ModelRef) -> ModelInfo:
    return ModelInfo(name=ref.name, version=ref.version, kind=ref.kind, provider=ref.provider)


def scored_item(item: ranking_pb2.ScoredItem) -> RecommendedItem:
    return RecommendedItem(
        item_id=item.item_id,
        score=item.score,
        retrieval_score=item.retrieval_score,
        category=item.category,
        price=item.price,
    )


def recommendation(response: ranking_pb2.RecommendResponse, request_id: str = "") -> Recommendation:
    return Recommendation(
        items=tuple(map(scored_item, response.items)),
        strategy=response.strategy,
        models=tuple(map(model_info, response.models)),
        experiment=response.experiment,
        variant=response.variant,
        request_id=request_id,
        consent_mode=response.consent_mode,
    )


def similar_items(response: ranking_pb2.SimilarItemsResponse) -> SimilarItems:
    return SimilarItems(
        items=tuple(map(scored_item, response.items)),
        models=tuple(map(model_info, response.models)),
    )


def audience(response: ranking_pb2.AudienceResponse) -> Audience:
    return Audience(
        users=tuple(
            AudienceMember(
                user_id=user.user_id,
                score=user.score,
                rfm_segment=user.rfm_segment,
                cluster=user.cluster,
            )
            for user in response.users
        ),
        eligible_users=response.eligible_users,
        models=tuple(map(model_info, response.models)),
    )


def profile(response: ranking_pb2.ProfileResponse) -> Profile:
    return Profile(
        user_id=response.user_id,
        known=response.known,
        features=dict(response.features),
        attributes=dict(response.attributes),
        rfm_segment=response.rfm_segment,
        cluster=response.cluster,
        models=tuple(map(model_info, response.models)),
    )


def ad_auction(response: ranking_pb2.RankAdsResponse, request_id: str = "") -> AdAuction:
    """Columns (`ranked`, the answer to `candidates`) or one message per ad (`ads`)."""
    if response.HasField("ranked"):
        r = response.ranked
        pcvr = r.pcvr if len(r.pcvr) else [None] * len(r.ad_ids)
        ads = tuple(
            RankedAd(ad_id=a, pctr=p, bid=b, expected_value=e, slot=s, price=c, pcvr=v)
            for a, p, b, e, s, c, v in zip(
                r.ad_ids, r.pctr, r.bid, r.expected_value, r.slot, r.price, pcvr, strict=True
            )
        )
    else:
        ads = tuple(
            RankedAd(
                ad_id=ad.ad_id,
                pctr=ad.pctr,
                bid=ad.bid,
                expected_value=ad.expected_value,
                slot=ad.slot,
                price=ad.price,
                pcvr=ad.pcvr if ad.HasField("pcvr") else None,
            )
            for ad in response.ads
        )
    return AdAuction(
        ads=ads,
        below_reserve=response.below_reserve,
        models=tuple(map(model_info, response.models)),
        experiment=response.experiment,
        variant=response.variant,
        request_id=request_id,
        consent_mode=response.consent_mode,
    )


def score_result(response: ranking_pb2.ScoreResponse) -> ScoreResult:
    return ScoreResult(
        outputs={name: from_tensor(tensor) for name, tensor in response.outputs.items()},
        model=model_info(response.model),
    )


def as_feedback_event(event: FeedbackEvent | Mapping[str, Any]) -> FeedbackEvent:
    """Accept a `FeedbackEvent` or a dict of its fields."""
    return event if isinstance(event, FeedbackEvent) else FeedbackEvent(**event)


def log_events_request(
    events: Iterable[FeedbackEvent | Mapping[str, Any]],
) -> feedback_pb2.LogEventsRequest:
    wire = []
    for event in map(as_feedback_event, events):
        fields = {name: getattr(event, name) for name in event.__slots__ if name != "context"}
        fields["consent"] = consent_value(fields["consent"])
        wire.append(feedback_pb2.FeedbackEvent(**fields, context=_text_map(event.context)))
    return feedback_pb2.LogEventsRequest(events=wire)


def model_status(status: models_pb2.ModelStatus) -> ModelStatus:
    return ModelStatus(
        name=status.name,
        version=status.version,
        kind=status.kind,
        provider=status.provider,
        available_versions=tuple(status.available_versions),
        loaded_versions=tuple(status.loaded_versions),
        state=status.state,
        last_error=status.last_error,
        policy=status.policy,
    )


_VARIANT_STATES = {
    "running": models_pb2.VARIANT_STATE_RUNNING,
    "stopped": models_pb2.VARIANT_STATE_STOPPED,
}
_VARIANT_STATE_NAMES = {number: name for name, number in _VARIANT_STATES.items()}
_VARIANT_MODELS = (
    "name",
    "weight",
    "ctr_model",
    "ctr_version",
    "retrieval_model",
    "retrieval_version",
)


def _variant_message(v: Variant) -> models_pb2.Variant:
    if v.state not in _VARIANT_STATES:
        raise ValueError(
            f"Variant {v.name!r}: state must be 'running' or 'stopped', not {v.state!r}"
        )
    return models_pb2.Variant(
        **{name: getattr(v, name) for name in _VARIANT_MODELS},
        state=_VARIANT_STATES[v.state],
        stop_reason=v.stop_reason,
        stopped_unix_ms=v.stopped_unix_ms,
    )


def _variant(v: models_pb2.Variant) -> Variant:
    return Variant(
        **{name: getattr(v, name) for name in _VARIANT_MODELS},
        state=_VARIANT_STATE_NAMES.get(v.state, str(v.state)),
        stop_reason=v.stop_reason,
        stopped_unix_ms=v.stopped_unix_ms,
    )


def experiment_message(experiment: Experiment) -> models_pb2.Experiment:
    return models_pb2.Experiment(
        name=experiment.name,
        salt=experiment.salt,
        rpcs=list(experiment.rpcs),
        variants=[_variant_message(v) for v in experiment.variants],
        segments=list(experiment.segments),
        enabled=experiment.enabled,
        guardrails=[
            models_pb2.Guardrail(**{name: getattr(g, name) for name in Guardrail.__slots__})
            for g in experiment.guardrails
        ],
        control=experiment.control,
        shadows=[
            models_pb2.Shadow(**{name: getattr(s, name) for name in Shadow.__slots__})
            for s in experiment.shadows
        ],
    )


def experiment(message: models_pb2.Experiment) -> Experiment:
    return Experiment(
        name=message.name,
        variants=tuple(_variant(v) for v in message.variants),
        rpcs=tuple(message.rpcs),
        salt=message.salt,
        segments=tuple(message.segments),
        enabled=message.enabled,
        guardrails=tuple(
            Guardrail(**{name: getattr(g, name) for name in Guardrail.__slots__})
            for g in message.guardrails
        ),
        control=message.control,
        shadows=tuple(
            Shadow(**{name: getattr(s, name) for name in Shadow.__slots__}) for s in message.shadows
        ),
    )
