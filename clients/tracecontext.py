"""W3C trace context for the SDK's calls, without depending on OpenTelemetry.

A call carries a ``traceparent`` (and ``tracestate``) header when the caller gives one with
:func:`trace_context`, or else when the caller uses OpenTelemetry and has a current span:
then the server's span for the call is a child of the caller's. The server answers with
its own span's ``traceparent`` in the trailing metadata.

    with trace_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        rr.recommend("u42")
"""

from __future__ import annotations

import contextvars
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_given: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "reachrank_traceparent", default=()
)


@contextmanager
def trace_context(traceparent: str, tracestate: str = "") -> Iterator[None]:
    """Send ``traceparent`` (W3C format) with every call made inside the block."""
    if not _TRACEPARENT.match(traceparent):
        raise ValueError(
            f"traceparent must be W3C '00-<32 hex trace id>-<16 hex span id>-<2 hex flags>', "
            f"got {traceparent!r}"
        )
    headers: tuple[tuple[str, str], ...] = (("traceparent", traceparent),)
    if tracestate:
        headers += (("tracestate", tracestate),)
    token = _given.set(headers)
    try:
        yield
    finally:
        _given.reset(token)


def trace_headers() -> tuple[tuple[str, str], ...]:
    """The trace context metadata for a call starting now (empty when there is none)."""
    given = _given.get()
    if given:
        return given
    # A caller with a current span has imported OpenTelemetry; the SDK never imports it first
    # (it is optional, and costs an import for callers that don't trace).
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None or not otel_trace.get_current_span().get_span_context().is_valid:
        return ()
    from opentelemetry import propagate

    carrier: dict[str, Any] = {}
    propagate.inject(carrier)
    return tuple((k, str(v)) for k, v in carrier.items() if k in ("traceparent", "tracestate"))
