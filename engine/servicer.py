"""The `reachrank.v1.Ranking` servicer: converts messages to pipeline calls and back.

Domain errors become gRPC statuses in one place (:mod:`engine.grpc_adapter`). Candidates and
results travel as columns where a request carries many (RankAds' `candidates`): reading or
building one message per ad costs more than the model does.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np
from reachrank.v1 import privacy_pb2, ranking_pb2, ranking_pb2_grpc

from clients.tensors import from_tensor, to_tensor
from engine import pipelines
from engine.ads.gate import AdGate, disabled_gate
from engine.decisions.log import DecisionLog
from engine.errors import FailedPrecondition, InvalidArgument
from engine.experiments import ExperimentStore
from engine.grpc_adapter import grpc_errors
from engine.guardrails import watched
from engine.models.base import ModelId, OnnxModel
from engine.models.ctr import CTRModel
from engine.models.profiles import ProfilesModel, UserSegment
from engine.models.retrieval import RetrievalModel
from engine.privacy.policy import policy_for
from engine.registry import ModelRegistry
from engine.routing import route
from engine.settings import Settings


def scored_items(items: list[pipelines.Recommended]) -> list[ranking_pb2.ScoredItem]:
    return [
        ranking_pb2.ScoredItem(
            item_id=i.item_id,
            score=i.score,
            retrieval_score=i.retrieval_score,
            category=i.category,
            price=i.price,
        )
        for i in items
    ]


def candidate_columns(
    columns: ranking_pb2.AdColumns,
) -> tuple[list[str], np.ndarray, dict[int, dict[str, str]]]:
    """(ad ids, bids, overrides by index) of columnar candidates."""
    ad_ids = list(columns.ad_ids)
    bids = np.array(columns.bids, dtype=np.float64)
    if len(bids) != len(ad_ids):
        raise InvalidArgument(
            f"candidates carry {len(ad_ids)} ad_ids but {len(bids)} bids; give one bid per ad"
        )
    overrides = {}
    for index, given in columns.features.items():
        if index >= len(ad_ids):
            raise InvalidArgument(
                f"candidates.features[{index}] names no ad (there are {len(ad_ids)})"
            )
        overrides[index] = dict(given.values)
    return ad_ids, bids, overrides


def candidate_messages(
    ads: Sequence[ranking_pb2.Ad],
) -> tuple[list[str], np.ndarray, dict[int, dict[str, str]]]:
    """The same columns from one `Ad` message per candidate (the older, slower form)."""
    ad_ids = [a.ad_id for a in ads]
    bids = np.fromiter((a.bid for a in ads), dtype=np.float64, count=len(ads))
    return ad_ids, bids, {i: dict(a.features) for i, a in enumerate(ads) if a.features}


def fill_ranked_columns(out: ranking_pb2.RankedAdColumns, auction: pipelines.Auction) -> None:
    out.ad_ids.extend(auction.ad_ids)
    out.pctr.extend(auction.pctr.tolist())
    out.bid.extend(auction.bid.tolist())
    out.expected_value.extend(auction.expected_value.tolist())
    out.slot.extend(auction.slot.tolist())
    out.price.extend(auction.price.tolist())
    if auction.bid_type is not None and auction.expected_charge is not None:
        out.bid_type.extend(auction.bid_type.tolist())
        out.expected_charge.extend(auction.expected_charge.tolist())
    if auction.pcvr is not None:
        out.pcvr.extend(auction.pcvr.tolist())


def model_ref(model_id: ModelId) -> ranking_pb2.ModelRef:
    return ranking_pb2.ModelRef(
        name=model_id.name, version=model_id.version, kind=model_id.kind, provider=model_id.provider
    )


class RankingServicer(ranking_pb2_grpc.RankingServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        experiments: ExperimentStore | None = None,
        decisions: DecisionLog | None = None,
        ads: AdGate | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.experiments = experiments
        self.privacy = policy_for(settings)  # consent, pseudonyms, tombstones (engine.privacy)
        # Campaign budgets, pacing and frequency caps on RankAds (engine.ads; off without any).
        self.ads = ads if ads is not None else disabled_gate()
        self.decisions = decisions

    def _retrieval(self, name: str | None = None, version: int | None = None) -> RetrievalModel:
        name = name or self.settings.retrieval_model
        model = self.registry.get(name, version)
        if not isinstance(model, RetrievalModel):
            raise FailedPrecondition(f"model {name!r} is not a retrieval model")
        return model

    def _profiles(self) -> ProfilesModel | None:
        model = self.registry.find(self.settings.profiles_model)
        return model if isinstance(model, ProfilesModel) else None

    def _ctr(self, name: str, version: int | None, required: bool) -> CTRModel | None:
        if not required and version is None and self.registry.find(name) is None:
            return None
        model = self.registry.get(name, version)
        if not isinstance(model, CTRModel):
            raise FailedPrecondition(f"model {name!r} is not a CTR model")
        return model

    @grpc_errors
    @watched("recommend")  # guardrails: the arm's latency and errors
    def Recommend(
        self, request: ranking_pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RecommendResponse:
        subject = self.privacy.resolve(request.user_id, request.consent)
        profiles = self._profiles() if subject.use_state else None
        segment = UserSegment(profiles, subject.user_id)  # looked up once, if at all
        chosen = route(self.experiments, self.settings, "recommend", subject.user_id, segment)
        f = request.filters
        draft = self.decisions.draft("recommend") if self.decisions is not None else None
        context_map = dict(request.context)
        result = pipelines.recommend(
            self._retrieval(*chosen.retrieval),
            self._ctr(*chosen.ctr, required=bool(chosen.experiment)),
            self.settings,
            user_id=subject.user_id,
            k=request.k,
            context=context_map,
            categories=list(f.categories),
            min_price=f.min_price if f.HasField("min_price") else None,
            max_price=f.max_price if f.HasField("max_price") else None,
            exclude=list(request.exclude),
            profiles=profiles,
            segment=segment,
            max_per_category=request.diversity.max_per_category,
            mmr_lambda=request.diversity.mmr_lambda,
            personalise=subject.use_state,
            decision=draft,
        )
        if draft is not None and self.decisions is not None:
            self.decisions.submit(
                draft, subject.loggable_user_id, context_map, chosen, result.models
            )
        return ranking_pb2.RecommendResponse(
            items=scored_items(result.items),
            strategy=result.strategy,
            consent_mode=subject.mode,
            models=[model_ref(m) for m in result.models],
            experiment=chosen.experiment,
            variant=chosen.variant,
        )

    @grpc_errors
    @watched("rank_ads")
    def RankAds(
        self, request: ranking_pb2.RankAdsRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankAdsResponse:
        subject = self.privacy.resolve(request.user_id, request.consent)
        segment = UserSegment(self._profiles() if subject.use_state else None, subject.user_id)
        chosen = route(self.experiments, self.settings, "rank_ads", subject.user_id, segment)
        ctr = self._ctr(*chosen.ctr, required=True)
        assert ctr is not None
        columnar = request.HasField("candidates")
        if columnar and len(request.ads):
            raise InvalidArgument("send the ads either as `ads` or as `candidates`, not both")
        ad_ids, bids, overrides = (
            candidate_columns(request.candidates) if columnar else candidate_messages(request.ads)
        )
        # Frequency caps count per user: only for a user whose state may be read (consent, not
        # forgotten), under the id the server keeps (a pseudonym when configured).
        capped_user = subject.user_id if subject.use_state else ""
        ads = self.ads.admit(request, capped_user, ad_ids, bids, overrides)
        draft = self.decisions.draft("rank_ads") if self.decisions is not None else None
        context_map = dict(request.context)
        result = pipelines.rank_ads(
            ctr,
            self.settings,
            user_id=subject.user_id,
            ad_ids=ads.ad_ids,
            bids=ads.bids,
            overrides=ads.overrides,
            slots=request.slots,
            reserve_price=request.reserve_price,
            context=context_map,
            winners_only=columnar and not request.all_ranked,
            personalise=subject.use_state,
            bid_types=ads.bid_types,
            reserve_ecpm=request.reserve_ecpm,
            decision=draft,
        )
        if draft is not None and self.decisions is not None:
            self.decisions.submit(
                draft, subject.loggable_user_id, context_map, chosen, result.models
            )
        result = self.ads.commit(ads, result)
        response = ranking_pb2.RankAdsResponse(
            below_reserve=result.below_reserve,
            consent_mode=subject.mode,
            models=[model_ref(m) for m in result.models],
            experiment=chosen.experiment,
            variant=chosen.variant,
        )
        ads.fill(response)
        if columnar:
            fill_ranked_columns(response.ranked, result)
        else:
            ranked = ranking_pb2.RankedAd
            response.ads.extend(
                ranked(ad_id=a, pctr=p, bid=b, expected_value=e, slot=s, price=c)
                for a, p, b, e, s, c in zip(
                    result.ad_ids,
                    result.pctr.tolist(),
                    result.bid.tolist(),
                    result.expected_value.tolist(),
                    result.slot.tolist(),
                    result.price.tolist(),
                    strict=True,
                )
            )
            if result.bid_type is not None and result.expected_charge is not None:
                for message, kind, charge in zip(
                    response.ads,
                    result.bid_type.tolist(),
                    result.expected_charge.tolist(),
                    strict=True,
                ):
                    message.bid_type, message.expected_charge = kind, charge
            if result.pcvr is not None:
                for message, pcvr in zip(response.ads, result.pcvr.tolist(), strict=True):
                    message.pcvr = pcvr
        return response

    @grpc_errors
    def Score(
        self, request: ranking_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.ScoreResponse:
        if not request.model:
            raise InvalidArgument("model is required")
        model = self.registry.get(request.model)
        if not isinstance(model, OnnxModel):
            raise FailedPrecondition(f"model {request.model!r} has no ONNX graph to score")
        if request.version and request.version != model.id.version:
            raise InvalidArgument(
                f"model {request.model!r} serves version {model.id.version}, not {request.version}"
            )
        inputs = {}
        for name, tensor in request.inputs.items():
            try:
                inputs[name] = from_tensor(tensor)
            except ValueError as exc:
                raise InvalidArgument(f"inputs[{name!r}]: {exc}") from None
            if inputs[name].ndim and inputs[name].shape[0] > self.settings.max_score_rows:
                raise InvalidArgument(
                    f"inputs[{name!r}] has more than {self.settings.max_score_rows} rows"
                )
        outputs = model.run(inputs)
        return ranking_pb2.ScoreResponse(
            outputs={k: to_tensor(v) for k, v in outputs.items()}, model=model_ref(model.id)
        )

    @grpc_errors
    def SimilarItems(
        self, request: ranking_pb2.SimilarItemsRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.SimilarItemsResponse:
        f = request.filters
        items, models = pipelines.similar_items(
            self._retrieval(),
            self.settings,
            item_id=request.item_id,
            k=request.k,
            categories=list(f.categories),
            min_price=f.min_price if f.HasField("min_price") else None,
            max_price=f.max_price if f.HasField("max_price") else None,
        )
        return ranking_pb2.SimilarItemsResponse(
            items=scored_items(items), models=[model_ref(m) for m in models]
        )

    @grpc_errors
    def Audience(
        self, request: ranking_pb2.AudienceRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.AudienceResponse:
        result = pipelines.audience(
            self._retrieval(),
            self._profiles(),
            self.settings,
            item_ids=list(request.item_ids),
            n=request.n,
            segments=list(request.segments),
            include_consumers=request.include_consumers,
        )
        return ranking_pb2.AudienceResponse(
            users=[
                ranking_pb2.AudienceMember(
                    user_id=u.user_id, score=u.score, rfm_segment=u.rfm_segment, cluster=u.cluster
                )
                for u, forgotten in zip(
                    result.users,
                    self.privacy.tombstones.mask([u.user_id for u in result.users]),
                    strict=True,
                )
                if not forgotten
            ],
            eligible_users=result.eligible_users,
            models=[model_ref(m) for m in result.models],
        )

    @grpc_errors
    def Profile(
        self, request: ranking_pb2.ProfileRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.ProfileResponse:
        profiles = self.registry.get(self.settings.profiles_model)
        if not isinstance(profiles, ProfilesModel):
            raise FailedPrecondition(
                f"model {self.settings.profiles_model!r} is not a profiles model"
            )
        subject = self.privacy.resolve(request.user_id, privacy_pb2.CONSENT_PERSONALISED)
        if not subject.use_state and request.user_id:
            return ranking_pb2.ProfileResponse(
                user_id=request.user_id, known=False, models=[model_ref(profiles.id)]
            )
        p = pipelines.profile(profiles, subject.user_id)
        return ranking_pb2.ProfileResponse(
            user_id=request.user_id,
            known=p.known,
            features=p.features,
            attributes=p.attributes,
            rfm_segment=p.rfm_segment,
            cluster=p.cluster,
            models=[model_ref(profiles.id)],
        )
