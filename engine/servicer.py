"""The `reachrank.v1.Ranking` servicer: converts messages to pipeline calls and back.

Domain errors become gRPC statuses in one place (:func:`grpc_errors`); anything unexpected
is logged with its traceback and answered INTERNAL without taking the server down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from reachrank.v1 import ranking_pb2, ranking_pb2_grpc

from clients.tensors import from_tensor, to_tensor
from engine import pipelines
from engine.errors import InvalidArgument, ServingError
from engine.models.base import ModelId
from engine.models.ctr import CTRModel
from engine.models.retrieval import RetrievalModel
from engine.registry import ModelRegistry
from engine.settings import Settings

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def grpc_errors(method: F) -> F:
    """Map ServingError to its status code; log and answer INTERNAL for anything else."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ServingError as exc:
            context.abort(exc.code, str(exc))
        except Exception:
            log.exception("%s failed", method.__name__)
            context.abort(
                grpc.StatusCode.INTERNAL, f"{method.__name__} failed on the server; see its log"
            )

    return wrapper  # type: ignore[return-value]


def model_ref(model_id: ModelId) -> ranking_pb2.ModelRef:
    return ranking_pb2.ModelRef(
        name=model_id.name, version=model_id.version, kind=model_id.kind, provider=model_id.provider
    )


class RankingServicer(ranking_pb2_grpc.RankingServicer):
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def _ctr(self, required: bool) -> CTRModel | None:
        model = (
            self.registry.get(self.settings.ctr_model)
            if required
            else self.registry.find(self.settings.ctr_model)
        )
        return model if isinstance(model, CTRModel) else None

    @grpc_errors
    def Recommend(
        self, request: ranking_pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RecommendResponse:
        retrieval = self.registry.get(self.settings.retrieval_model)
        assert isinstance(retrieval, RetrievalModel)
        f = request.filters
        result = pipelines.recommend(
            retrieval,
            self._ctr(required=False),
            self.settings,
            user_id=request.user_id,
            k=request.k,
            context=dict(request.context),
            categories=list(f.categories),
            min_price=f.min_price if f.HasField("min_price") else None,
            max_price=f.max_price if f.HasField("max_price") else None,
            exclude=list(request.exclude),
        )
        return ranking_pb2.RecommendResponse(
            items=[
                ranking_pb2.ScoredItem(
                    item_id=i.item_id,
                    score=i.score,
                    retrieval_score=i.retrieval_score,
                    category=i.category,
                    price=i.price,
                )
                for i in result.items
            ],
            strategy=result.strategy,
            models=[model_ref(m) for m in result.models],
        )

    @grpc_errors
    def RankAds(
        self, request: ranking_pb2.RankAdsRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.RankAdsResponse:
        ctr = self._ctr(required=True)
        assert ctr is not None
        result = pipelines.rank_ads(
            ctr,
            self.settings,
            user_id=request.user_id,
            ads=[pipelines.AdRequest(a.ad_id, a.bid, dict(a.features)) for a in request.ads],
            slots=request.slots,
            reserve_price=request.reserve_price,
            context=dict(request.context),
        )
        return ranking_pb2.RankAdsResponse(
            ads=[
                ranking_pb2.RankedAd(
                    ad_id=a.ad_id,
                    pctr=a.pctr,
                    bid=a.bid,
                    expected_value=a.expected_value,
                    slot=a.slot,
                    price=a.price,
                )
                for a in result.ads
            ],
            below_reserve=result.below_reserve,
            models=[model_ref(m) for m in result.models],
        )

    @grpc_errors
    def Score(
        self, request: ranking_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> ranking_pb2.ScoreResponse:
        if not request.model:
            raise InvalidArgument("model is required")
        model = self.registry.get(request.model)
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
