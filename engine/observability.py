"""What the server tells its operators: Prometheus metrics, request ids and structured logs.

One server interceptor times every RPC and counts it by method, status code, model,
version and experiment variant; the batcher and the registry report queue time, batch
sizes, inference time and load events. Metrics live in the process's default Prometheus
registry and are served over HTTP on ``metrics_port``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from engine.batching import BatchInfo

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Which server process answered (host:pid), for debugging load balancing across workers.
SERVED_BY_HEADER = "x-served-by"
_SERVED_BY = f"{socket.gethostname()}:{os.getpid()}"
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.0,
    2.0,
    5.0,
)

REQUESTS = Counter(
    "reachrank_requests",
    "RPCs answered, by method, status code and experiment variant",
    ["rpc", "code", "variant"],
)
MODEL_REQUESTS = Counter(
    "reachrank_model_requests",
    "RPCs answered per model version that took part",
    ["rpc", "model", "version", "code"],
)
LATENCY = Histogram(
    "reachrank_request_seconds", "RPC latency in the server", ["rpc"], buckets=_LATENCY_BUCKETS
)
QUEUE = Histogram(
    "reachrank_queue_seconds",
    "Time a request waited in a model's batch queue",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE = Histogram(
    "reachrank_inference_seconds",
    "Time of one batched inference call",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram(
    "reachrank_batch_rows",
    "Rows per batched inference call",
    ["model"],
    buckets=(1, 8, 32, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
)
BATCH_REQUESTS = Histogram(
    "reachrank_batch_requests",
    "Requests merged per inference call",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
DROPPED = Counter(
    "reachrank_deadline_dropped",
    "Requests dropped from a queue because their deadline passed",
    ["model"],
)
CANCELLED = Counter(
    "reachrank_cancelled_dropped",
    "Requests dropped from a queue because their caller cancelled or went away",
    ["model"],
)
LOADS = Counter("reachrank_model_loads", "Model load attempts", ["model", "outcome"])
LOAD_SECONDS = Histogram(
    "reachrank_model_load_seconds", "Time to load, validate and warm up a version", ["model"]
)
SERVING_VERSION = Gauge(
    "reachrank_model_serving_version", "Version taking traffic (0: none)", ["model"]
)


def record_batch(model: str) -> Callable[[BatchInfo], None]:
    """A batcher hook that feeds the queue/batch/inference metrics of one model."""
    queue, inference = QUEUE.labels(model), INFERENCE.labels(model)
    rows, requests, dropped, cancelled = (
        BATCH_ROWS.labels(model),
        BATCH_REQUESTS.labels(model),
        DROPPED.labels(model),
        CANCELLED.labels(model),
    )

    def hook(info: BatchInfo) -> None:
        for q in info.queue_seconds:
            queue.observe(q)
        if info.requests:  # not a batch whose requests had all expired: nothing ran
            inference.observe(info.compute_seconds)
            rows.observe(info.rows)
            requests.observe(info.requests)
        if info.dropped_expired:
            dropped.inc(info.dropped_expired)
        if info.dropped_cancelled:
            cancelled.inc(info.dropped_cancelled)

    return hook


def record_load(name: str, version: int | None, ok: bool, seconds: float) -> None:
    LOADS.labels(name, "ok" if ok else "refused").inc()
    if ok:
        LOAD_SECONDS.labels(name).observe(seconds)
        SERVING_VERSION.labels(name).set(version or 0)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics over HTTP; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Times and counts every unary RPC, and carries the caller's request id (metadata
    ``x-request-id``, generated when absent) into the logs and back in trailing metadata."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        rpc = handler_call_details.method.rsplit("/", 1)[-1]
        header = next(
            (
                v
                for k, v in (handler_call_details.invocation_metadata or ())
                if k == REQUEST_ID_HEADER
            ),
            None,
        )
        inner = handler.unary_unary
        latency = LATENCY.labels(rpc)

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            rid = header or uuid.uuid4().hex
            token = request_id.set(rid)
            context.set_trailing_metadata(
                ((REQUEST_ID_HEADER, rid), (SERVED_BY_HEADER, _SERVED_BY))
            )
            start = time.perf_counter()
            response = None
            try:
                response = inner(request, context)
                return response
            finally:
                elapsed = time.perf_counter() - start
                latency.observe(elapsed)
                code = context.code()
                if isinstance(code, grpc.StatusCode):
                    name = code.name
                else:  # no status set: OK if it answered, else an unexpected exception escaped
                    name = "OK" if response is not None else "UNKNOWN"
                variant = getattr(response, "variant", "")
                REQUESTS.labels(rpc, name, variant).inc()
                for model in getattr(response, "models", ()):
                    MODEL_REQUESTS.labels(rpc, model.name, str(model.version), name).inc()
                if log.isEnabledFor(logging.DEBUG):  # the access log, off by default
                    log.debug("%s %s %.2f ms", rpc, name, elapsed * 1000)
                request_id.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside an RPC)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str = "INFO", json_format: bool = False) -> None:
    """Plain or JSON log lines, each with the request id of the RPC that wrote it."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if json_format:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
