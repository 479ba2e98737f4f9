"""Build and run the gRPC server: Ranking service, standard health and reflection,
orderly shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from reachrank.v1 import models_pb2, models_pb2_grpc, ranking_pb2, ranking_pb2_grpc

import kernels
from engine.ads.setup import AdServices, add_ads_to_server
from engine.campaigns_servicer import add_campaigns_to_server
from engine.errors import BundleError
from engine.extra_services import ExtraServices, add_extra_services
from engine.interceptor import ServingInterceptor
from engine.kserve import SERVICE_NAME as KSERVE_SERVICE
from engine.kserve import add_kserve_to_server
from engine.model_service import ModelServiceServicer
from engine.models.ctr import CTRModel
from engine.models.sequence import SequenceRetrievalModel
from engine.observability import record_load, start_metrics_server
from engine.privacy.servicer import add_privacy_to_server
from engine.registry import ModelRegistry
from engine.routing import prepare_experiment
from engine.runtime import apply_thread_budget
from engine.security import auth_interceptor, server_credentials
from engine.servicer import RankingServicer
from engine.settings import Settings
from engine.shadow import open_shadows
from engine.state import open_state_store
from engine.tracing import Tracing, open_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)
_LINGER_S = 0.5
RANKING_SERVICE = ranking_pb2.DESCRIPTOR.services_by_name["Ranking"].full_name
MODEL_SERVICE = models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    registry: ModelRegistry
    health: health.HealthServicer
    settings: Settings
    metrics_port: int | None = None
    extras: ExtraServices | None = None
    drain: ServingInterceptor | None = None
    tracing: Tracing | None = None
    ads: AdServices | None = None

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", RANKING_SERVICE):
            self.health.set(service, status)

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new RPCs with UNAVAILABLE, let in-flight ones finish
        within the grace, then stop."""
        grace = self.settings.grace_period_s if grace is None else grace
        self.set_serving(False)
        self.registry.stop_polling()
        if self.drain is not None and grace > 0:
            deadline = time.monotonic() + grace
            if not self.drain.drain(grace):
                log.warning(
                    "%d calls still running after the %.1f s grace", self.drain.in_flight, grace
                )
            # Keep answering UNAVAILABLE a moment, so callers mid-retry and balancers that
            # have not yet read NOT_SERVING move on before the port closes.
            time.sleep(max(0.0, min(_LINGER_S, deadline - time.monotonic())))
            grace = 0.0
        self.server.stop(grace).wait()
        if self.extras is not None:
            self.extras.close()  # flush the feedback log once no LogEvents can still run
        if self.tracing is not None:
            self.tracing.close()  # export the spans still batched
        if self.ads is not None:
            self.ads.close()  # the campaigns poll thread


def _oldest_history_cut(registry: ModelRegistry) -> int | None:
    """The earliest training cut among the served models that follow live events (CTR
    history features, sequence retrieval; None: none has one)."""
    cuts = [
        m.history_cut_ms
        for m in (registry.find(n) for n in registry.names())
        if isinstance(m, CTRModel | SequenceRetrievalModel) and m.history_cut_ms is not None
    ]
    return min(cuts) if cuts else None


def start_server(
    settings: Settings,
    registry: ModelRegistry | None = None,
    span_exporter: SpanExporter | None = None,
) -> RunningServer:
    """Load the repository, then start serving; health turns SERVING once models are loaded.
    ``span_exporter`` receives the decision traces (else ``otlp_endpoint``, if set)."""
    apply_thread_budget(settings)
    started = time.perf_counter()
    # Bad TLS or token files fail the start before any model is loaded.
    credentials = server_credentials(settings)
    auth = auth_interceptor(settings)
    # Compile (or load from the Numba cache) every kernel now, never on a request.
    log.info("kernels ready in %.1f s", kernels.warmup())
    registry = registry or ModelRegistry(
        settings, on_event=lambda e: record_load(e.name, e.version, e.ok, e.seconds)
    )
    # Shared by the replicas that name the same store (engine.state): LogEvents feeds it, and a
    # replica without a feedback log of its own still reads what the others logged.
    shared = settings.state_store != "embedded"
    state = open_state_store(settings) if settings.feedback_dir is not None or shared else None
    live = state.histories if state is not None and settings.live_history else None
    if live is not None:
        registry.live_history = live
        for name in registry.names():  # a registry passed in may hold loaded models
            model = registry.find(name)
            if isinstance(model, CTRModel | SequenceRetrievalModel):
                model.live = live
    failed = registry.load_all()
    if failed:
        log.warning("models refused at start: %s", failed)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Several worker processes may share the port (`serve --workers N`); otherwise a second
        # server on a busy port must fail instead of silently splitting the traffic.
        ("grpc.so_reuseport", 1 if settings.so_reuseport else 0),
    ]
    # One interceptor for drain, request ids, metrics and decoding, outermost: a call refused
    # while draining costs nothing. Access control inside it: a call without a valid token is
    # counted, then refused before any decoding or model work.
    drain = ServingInterceptor()
    interceptors: list[grpc.ServerInterceptor] = [drain]
    if auth is not None:
        interceptors.append(auth)
    tracing = open_tracing(settings, span_exporter)
    if tracing is not None:  # outermost: the span covers the whole call
        interceptors.insert(0, tracing.interceptor)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.grpc_threads),
        options=options,
        interceptors=interceptors,
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    # Campaign budgets, pacing and frequency caps on RankAds (engine.ads), billed by LogEvents.
    ads = add_ads_to_server(server, settings, state)
    extras = add_extra_services(
        server,
        settings,
        functools.partial(prepare_experiment, registry, settings),
        live,
        _oldest_history_cut(registry),
        state,
        ads=ads.gate,
    )
    open_shadows(registry, settings, extras.experiments)  # closed by extras.close()
    ranking_pb2_grpc.add_RankingServicer_to_server(
        RankingServicer(registry, settings, extras.experiments, extras.decisions, ads=ads.gate),
        server,
    )
    models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServiceServicer(registry), server)
    add_kserve_to_server(server, registry, settings)
    campaigns = add_campaigns_to_server(
        server, registry, settings, extras.contacts, extras.decisions
    )
    privacy = add_privacy_to_server(server, settings, state, extras.feedback)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            RANKING_SERVICE,
            *extras.service_names,
            campaigns,
            privacy,
            ads.service_name,
            KSERVE_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.host}:{settings.port}"
    port = (
        server.add_secure_port(address, credentials)
        if credentials is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        ads.close()
        extras.close()
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    try:
        metrics_port = (
            start_metrics_server(settings.metrics_host, settings.metrics_port)
            if settings.metrics_port is not None
            else None
        )
    except OSError as exc:
        ads.close()
        extras.close()  # release the feedback log's lock before failing
        raise OSError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
        ) from exc
    running = RunningServer(
        server, port, registry, health_servicer, settings, metrics_port, extras, drain, tracing, ads
    )
    running.set_serving(False)
    server.start()
    if registry.ready():
        running.set_serving(True)
    registry.start_polling()
    log.info(
        "ReachRank serving %s on %s:%d (ready in %.1f s)",
        registry.names(),
        settings.host,
        port,
        time.perf_counter() - started,
    )
    return running


def serve_forever(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain and exit."""
    running = start_server(settings)
    if not running.registry.ready():
        running.stop(0)
        raise BundleError(f"no servable model in {settings.repo}")
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: draining (grace %.1f s)", signum, settings.grace_period_s)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    running.stop()
    log.info("stopped")
