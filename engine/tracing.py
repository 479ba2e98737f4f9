"""OpenTelemetry traces of serving decisions, off by default (``otlp_endpoint``).

When on, every decision RPC (Recommend, RankAds, Score, Campaigns Plan, KServe ModelInfer) is
one SERVER span, a child of the caller's W3C ``traceparent`` (gRPC metadata) when it sends
one, and the server's own ``traceparent`` comes back in trailing metadata. Its stages (route,
retrieve, features, infer, auction, plan, log: the decision log's hand-off, shadow: the
shadow models' hand-off) are child spans, made by wrapping the stage
functions named in ``STAGES`` when a traced server starts, the way OpenTelemetry's
instrumentation packages patch libraries: with tracing off nothing is wrapped, so a request
pays nothing at all, and the pipelines carry no tracing code.

Spans go through a ``BatchSpanProcessor`` to an OTLP/gRPC exporter (a test may hand its own
exporter instead). The tracer is per server, carried to the stage wrappers in a context
variable, so servers with and without tracing can share one process.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from engine.observability import REQUEST_ID_HEADER, SERVED_BY
from engine.settings import Settings

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# The decision RPCs that get a span (other RPCs, health and admin, are not traced).
DECISION_METHODS = frozenset(
    {
        "/reachrank.v1.Ranking/Recommend",
        "/reachrank.v1.Ranking/RankAds",
        "/reachrank.v1.Ranking/Score",
        "/reachrank.v1.Campaigns/Plan",
        "/inference.GRPCInferenceService/ModelInfer",
    }
)

# (module[:class], attribute, stage): the functions whose calls become stage spans. A module
# attribute is patched where the caller looks it up (``from x import f`` binds it there).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("engine.servicer", "route", "route"),
    ("engine.models.retrieval:RetrievalModel", "retrieve", "retrieve"),
    ("engine.models.sequence:SequenceRetrievalModel", "retrieve", "retrieve"),
    ("engine.models.ctr:CTRModel", "features", "features"),
    ("engine.campaigns", "features", "features"),
    ("engine.models.base:OnnxModel", "infer", "infer"),
    ("engine.models.uplift:UpliftModel", "score", "infer"),
    ("engine.kserve.servicer", "infer", "infer"),
    ("engine.kserve.servicer", "triton_infer", "infer"),
    ("engine.pipelines", "gsp_auction", "auction"),
    ("engine.campaigns", "plan_campaign", "plan"),
    ("engine.decisions.log:DecisionLog", "submit", "log"),
    ("engine.campaigns_servicer", "plan_decision", "log"),
    ("engine.shadow:ShadowRunner", "offer", "shadow"),
)

_tracer: contextvars.ContextVar[trace.Tracer | None] = contextvars.ContextVar(
    "reachrank_tracer", default=None
)
_stage: contextvars.ContextVar[str] = contextvars.ContextVar("reachrank_stage", default="")
_propagator = TraceContextTextMapPropagator()


def sampled(traceparent: str | None, ratio: float, rng: random.Random) -> bool:
    """Whether to record this call's trace: as the caller decided when it sends a valid
    ``traceparent`` (its sampled flag), else with probability ``ratio``. Decided before any
    span is made, so an unrecorded call costs no span at all (the SDK's non-recording spans
    still cost most of a recorded one's work)."""
    if traceparent and len(traceparent) == 55 and traceparent[2] == "-":
        try:
            return bool(int(traceparent[53:55], 16) & 1)
        except ValueError:
            pass  # malformed: as if absent
    return ratio >= 1.0 or rng.random() < ratio


def _rows(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _describe(span: trace.Span, stage: str, args: tuple[Any, ...], result: Any) -> None:
    """A stage span's attributes: the model it ran and the rows it handled."""
    model = getattr(args[0], "id", None) if args else None
    if model is not None and hasattr(model, "version"):
        span.set_attribute("reachrank.model", model.name)
        span.set_attribute("reachrank.model_version", int(model.version))
    rows: int | None = None
    if stage == "retrieve" and isinstance(result, tuple):
        rows = _rows(result[0])
    elif stage == "features" and len(args) > 2:
        rows = _rows(args[2])
    elif stage == "infer" and len(args) > 1 and isinstance(args[1], dict) and args[1]:
        rows = _rows(next(iter(args[1].values())))
    elif stage == "auction":
        rows = _rows(getattr(result, "order", None))
    elif stage == "route":
        span.set_attribute("reachrank.experiment", getattr(result, "experiment", ""))
        span.set_attribute("reachrank.variant", getattr(result, "variant", ""))
    if rows is not None:
        span.set_attribute("reachrank.rows", rows)


def _staged(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracer = _tracer.get()
        if tracer is None or _stage.get() == stage:  # untraced call, or the stage's own inner call
            return fn(*args, **kwargs)
        with tracer.start_as_current_span(stage) as span:
            token = _stage.set(stage)
            try:
                result = fn(*args, **kwargs)
            finally:
                _stage.reset(token)
            if span.is_recording():
                _describe(span, stage, args, result)
            return result

    return wrapper


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A stage span around code that is not a function in ``STAGES`` (no span when the
    current request is not traced)."""
    tracer = _tracer.get()
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name):
        yield


def traced() -> bool:
    """Whether the current request is traced (cheap: one context variable read)."""
    return _tracer.get() is not None


class _Instrumentation:
    """The stage wrappers, installed while at least one traced server runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._originals: list[tuple[object, str, Any]] = []

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            for where, attribute, name in STAGES:
                module_name, _, class_name = where.partition(":")
                owner: object = importlib.import_module(module_name)
                if class_name:
                    owner = getattr(owner, class_name)
                # A class attribute is taken from the class's own dict (a subclass that does
                # not override it is covered by its base's wrapper).
                original = vars(owner)[attribute] if class_name else getattr(owner, attribute)
                self._originals.append((owner, attribute, original))
                setattr(owner, attribute, _staged(name, original))

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            for owner, attribute, original in reversed(self._originals):
                setattr(owner, attribute, original)
            self._originals.clear()


_instrumentation = _Instrumentation()


class _TraceContext:
    """The servicer context of a traced call: trailing metadata also carries the server
    span's ``traceparent`` (whoever sets it, the interceptors or a servicer)."""

    def __init__(self, context: grpc.ServicerContext, traceparent: str) -> None:
        self._context = context
        self._traceparent = ((TRACEPARENT, traceparent),)
        self.request_id = ""
        context.set_trailing_metadata(self._traceparent)

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        for key, value in metadata:
            if key == REQUEST_ID_HEADER:
                self.request_id = value
        self._context.set_trailing_metadata((*metadata, *self._traceparent))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class TracingInterceptor(grpc.ServerInterceptor):
    """Outermost interceptor of a traced server: one SERVER span per decision RPC."""

    def __init__(
        self,
        tracer: trace.Tracer,
        sample_ratio: float = 1.0,
        methods: frozenset[str] = DECISION_METHODS,
    ) -> None:
        self._tracer = tracer
        self._ratio = sample_ratio
        self._rng = random.Random()
        self._methods = methods
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method not in self._methods:
            return handler
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:  # gRPC hands the same handler each call
            known = (
                handler,
                grpc.unary_unary_rpc_method_handler(
                    self._span_around(method, handler.unary_unary),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                ),
            )
            self._wrapped[method] = known
        return known[1]

    def _span_around(
        self, method: str, inner: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        service, _, rpc = method.lstrip("/").rpartition("/")
        name = f"{service}/{rpc}"
        tracer, ratio = self._tracer, self._ratio
        fixed = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            carrier = {
                k: v
                for k, v in context.invocation_metadata() or ()
                if k in (TRACEPARENT, TRACESTATE)
            }
            if not sampled(carrier.get(TRACEPARENT), ratio, self._rng):
                return inner(request, context)  # no span, no stage spans: untraced cost
            parent = _propagator.extract(carrier) if carrier else None
            with tracer.start_as_current_span(
                name,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=fixed,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                out: dict[str, str] = {}
                _propagator.inject(out)
                traced_context = _TraceContext(context, out.get(TRACEPARENT, ""))
                token = _tracer.set(tracer)
                response = None
                try:
                    response = inner(request, traced_context)
                    return response
                finally:
                    _tracer.reset(token)
                    if span.is_recording():
                        _finish(span, context, traced_context.request_id, response)

        return behavior


def _finish(
    span: trace.Span, context: grpc.ServicerContext, request_id: str, response: Any
) -> None:
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.OK if response is not None else grpc.StatusCode.UNKNOWN
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if request_id:
        span.set_attribute("reachrank.request_id", request_id)
    if code is not grpc.StatusCode.OK:
        # The status name only: details may quote request values (engine.grpc_adapter).
        span.set_status(Status(StatusCode.ERROR, code.name))
    if response is None:
        return
    for attribute in ("experiment", "variant", "strategy"):
        value = getattr(response, attribute, "")
        if value:
            span.set_attribute(f"reachrank.{attribute}", value)
    models = getattr(response, "models", None)
    if models:
        span.set_attribute("reachrank.models", [f"{m.name}/{m.version}" for m in models])


@dataclass
class Tracing:
    """A traced server's provider and interceptor; ``close`` flushes the spans left."""

    provider: TracerProvider
    interceptor: TracingInterceptor

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        _instrumentation.release()
        self.provider.shutdown()


def open_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing | None:
    """Tracing per the settings (None when ``otlp_endpoint`` is unset and no exporter is
    given). A given exporter gets each span as it ends (tests); OTLP gets batches."""
    if exporter is None and not settings.otlp_endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otlp_service_name, "service.instance.id": SERVED_BY}
        ),
        sampler=ALWAYS_ON,  # the interceptor decides (``sampled``) before any span exists
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint or ""
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, insecure=not endpoint.startswith("https://"))
            )
        )
    _instrumentation.acquire()
    tracer = provider.get_tracer("reachrank.engine")
    return Tracing(provider, TracingInterceptor(tracer, settings.trace_sample_ratio))
