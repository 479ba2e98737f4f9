"""What the server tells its operators: Prometheus metrics, request ids and structured logs.

The server's interceptor (:mod:`engine.interceptor`) times every RPC and counts it by
method, status code, model, version and experiment variant with the metrics declared here; the batcher and the registry report queue time, batch
sizes, inference time and load events. Metrics live in the process's default Prometheus
registry and are served over HTTP on ``metrics_port``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from engine.batching import BatchInfo

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Which server process answered (host:pid), for debugging load balancing across workers.
SERVED_BY_HEADER = "x-served-by"
SERVED_BY = f"{socket.gethostname()}:{os.getpid()}"
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
