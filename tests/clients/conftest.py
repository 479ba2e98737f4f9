"""Fake ReachRank services (Ranking, Feedback, ModelService, Experiments, KServe v2 ModelInfer,
health) on a free
127.0.0.1 port, to test the client's plumbing.

It answers with fixed, easily checked values; the real server's behaviour is covered by the
engine's end-to-end tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from reachrank.kserve.v2 import grpc_service_pb2, grpc_service_pb2_grpc
from reachrank.v1 import (
    feedback_pb2,
    feedback_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    ranking_pb2,
    ranking_pb2_grpc,
)

from clients.tensors import from_tensor, to_tensor
from engine.auction import gsp_auction

MODEL = ranking_pb2.ModelRef(name="ctr", version=3, kind="ctr", provider="CPUExecutionProvider")


@dataclass
class Received:
    method: str
    request: object
    metadata: dict[str, str]


@dataclass
class FakeRanking(ranking_pb2_grpc.RankingServicer):
    """Records every call; can fail the next N calls, abort all calls, or answer slowly."""

    fail_next: int = 0
    abort_with: tuple[grpc.StatusCode, str] | None = None
    delay: float = 0.0
    # While set, every call is held inside the server until the event is set.
    hold: threading.Event | None = None
    calls: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _receive(self, method: str, request: object, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls.append(Received(method, request, dict(context.invocation_metadata())))
            fail = self.fail_next > 0
            self.fail_next -= fail
        if self.delay:
            time.sleep(self.delay)
        if self.hold is not None:
            self.hold.wait(600)
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if self.abort_with:
            context.abort(*self.abort_with)

    def Recommend(self, request, context):
        self._receive("Recommend", request, context)
        items = [
            ranking_pb2.ScoredItem(
                item_id=f"i{n}",
                score=1.0 / (n + 1),
                retrieval_score=float(10 - n),
                category="books",
                price=10.0 + n,
            )
            for n in range(request.k)
        ]
        return ranking_pb2.RecommendResponse(
            items=items,
            strategy="personalised",
            models=[MODEL],
            experiment="exp1",
            variant="control",
        )

    def RankAds(self, request, context):
        self._receive("RankAds", request, context)
        # The SDK sends columns. pCTR is 0.1 unless an ad's features say "pctr"; the auction is
        # the server's own (engine.auction: GSP, each winner pays the next ad's expected value
        # over its own pCTR), so the SDK is tested on the prices a real server charges.
        c = request.candidates
        bids = np.array(c.bids, dtype=np.float64)
        pctr = np.array(
            [
                float(c.features[i].values.get("pctr", 0.1)) if i in c.features else 0.1
                for i in range(len(c.ad_ids))
            ]
        )
        keep = np.flatnonzero(bids >= request.reserve_price)
        result = gsp_auction(
            pctr[keep],
            bids[keep],
            [c.ad_ids[i] for i in keep],
            request.slots,
            request.reserve_price,
        )
        response = ranking_pb2.RankAdsResponse(
            below_reserve=len(bids) - len(keep),
            models=[MODEL],
            experiment="exp1",
            variant="control",
        )
        response.ranked.SetInParent()
        for position, j in enumerate(result.order):
            i = keep[j]
            wins = bool(result.slot[position])
            if not wins and not request.all_ranked:
                break
            r = response.ranked
            r.ad_ids.append(c.ad_ids[i])
            r.pctr.append(pctr[i])
            r.bid.append(bids[i])
            r.expected_value.append(result.expected_value[position])
            r.slot.append(int(result.slot[position]))
            r.price.append(result.price[position])
        return response

    def SimilarItems(self, request, context):
        self._receive("SimilarItems", request, context)
        category = request.filters.categories[0] if request.filters.categories else "books"
        items = [
            ranking_pb2.ScoredItem(
                item_id=f"{request.item_id}-like-{n}", score=1.0 - n / 10, category=category
            )
            for n in range(request.k)
        ]
        return ranking_pb2.SimilarItemsResponse(items=items, models=[MODEL])

    def Audience(self, request, context):
        self._receive("Audience", request, context)
        users = [
            ranking_pb2.AudienceMember(
                user_id=f"u{m}", score=float(request.n - m), rfm_segment="champions", cluster=m % 3
            )
            for m in range(request.n)
        ]
        return ranking_pb2.AudienceResponse(users=users, eligible_users=1000, models=[MODEL])

    def Profile(self, request, context):
        self._receive("Profile", request, context)
        if not request.user_id.startswith("u"):
            return ranking_pb2.ProfileResponse(user_id=request.user_id, known=False, models=[MODEL])
        return ranking_pb2.ProfileResponse(
            user_id=request.user_id,
            known=True,
            features={"recency_days": 3.0, "frequency": 7.0},
            attributes={"gender": "f"},
            rfm_segment="loyal",
            cluster=2,
            models=[MODEL],
        )

    def Score(self, request, context):
        self._receive("Score", request, context)
        total = sum(from_tensor(t).astype(np.float32).sum(axis=-1) for t in request.inputs.values())
        return ranking_pb2.ScoreResponse(
            outputs={"score": to_tensor(np.asarray(total, np.float32))}, model=MODEL
        )


class FakeFeedback(feedback_pb2_grpc.FeedbackServicer):
    """Keeps every logged event; records calls (and injects failures) through `ranking`."""

    def __init__(self, ranking: FakeRanking) -> None:
        self.ranking = ranking
        self.events: list[feedback_pb2.FeedbackEvent] = []

    def LogEvents(self, request, context):
        self.ranking._receive("LogEvents", request, context)
        self.events.extend(request.events)
        return feedback_pb2.LogEventsResponse(accepted=len(request.events))


class FakeModels(models_pb2_grpc.ModelServiceServicer):
    """Two models; Load pins a version, Unload stops serving."""

    def __init__(self, ranking: FakeRanking) -> None:
        self.ranking = ranking
        self.models = {
            name: models_pb2.ModelStatus(
                name=name, version=2, kind=name, available_versions=[1, 2],
                loaded_versions=[2], state="SERVING", policy="latest",
            )
            for name in ("ctr", "retrieval")
        }  # fmt: skip

    def List(self, request, context):
        self.ranking._receive("ModelService.List", request, context)
        return models_pb2.ListModelsResponse(models=list(self.models.values()))

    def Load(self, request, context):
        self.ranking._receive("ModelService.Load", request, context)
        status = self.models[request.name]
        if request.version:
            status.version, status.policy = request.version, f"pinned:{request.version}"
        status.state = "SERVING"
        return models_pb2.LoadModelResponse(model=status)

    def Unload(self, request, context):
        self.ranking._receive("ModelService.Unload", request, context)
        status = self.models[request.name]
        status.state, status.version = "UNLOADED", 0
        del status.loaded_versions[:]
        return models_pb2.UnloadModelResponse(model=status)


class FakeExperiments(models_pb2_grpc.ExperimentsServicer):
    def __init__(self, ranking: FakeRanking) -> None:
        self.ranking = ranking
        self.stored: dict[str, models_pb2.Experiment] = {}

    def Set(self, request, context):
        self.ranking._receive("Experiments.Set", request, context)
        self.stored[request.name] = request
        return request

    def List(self, request, context):
        self.ranking._receive("Experiments.List", request, context)
        return models_pb2.ListExperimentsResponse(experiments=list(self.stored.values()))

    def Delete(self, request, context):
        self.ranking._receive("Experiments.Delete", request, context)
        if request.name not in self.stored:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no experiment {request.name!r}")
        del self.stored[request.name]
        return models_pb2.DeleteExperimentResponse()


class FakeInference(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 ModelInfer: records the request and answers with no outputs."""

    def __init__(self, ranking: FakeRanking) -> None:
        self.ranking = ranking

    def ModelInfer(self, request, context):
        self.ranking._receive("ModelInfer", request, context)
        return grpc_service_pb2.ModelInferResponse(model_name=request.model_name)


@dataclass
class FakeServer:
    servicer: FakeRanking
    health: health.HealthServicer
    port: int
    server: grpc.Server
    feedback: FakeFeedback
    models: FakeModels
    experiments: FakeExperiments

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)


def start_fake_server(
    credentials: grpc.ServerCredentials | None = None, max_workers: int = 8
) -> FakeServer:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    servicer, health_servicer = FakeRanking(), health.HealthServicer()
    feedback, models, experiments = (
        FakeFeedback(servicer),
        FakeModels(servicer),
        FakeExperiments(servicer),
    )
    ranking_pb2_grpc.add_RankingServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    feedback_pb2_grpc.add_FeedbackServicer_to_server(feedback, server)
    models_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    models_pb2_grpc.add_ExperimentsServicer_to_server(experiments, server)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        FakeInference(servicer), server
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    fake = FakeServer(servicer, health_servicer, port, server, feedback, models, experiments)
    fake.set_serving(True)
    return fake


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    fake = start_fake_server()
    yield fake
    fake.server.stop(grace=None)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
