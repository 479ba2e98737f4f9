"""The server's one interceptor for every unary call: the drain gate, request ids, metrics and
request decoding, composed once per method instead of one interceptor (and one new handler
object) per concern and per call.

- **Drain** (``drain()``): once a server is told to stop, calls that have not started are
  refused with UNAVAILABLE, which clients retry on another replica, while the calls already
  in a handler finish. gRPC's own ``server.stop(grace)`` answers calls arriving during the
  grace with CANCELLED, which a client cannot tell from a call that failed half-way. Health
  and reflection stay open, so load balancers read NOT_SERVING instead of an error.
- **Observability**: the caller's ``x-request-id`` (generated when absent) reaches the logs
  and comes back in trailing metadata with ``x-served-by``; every call is timed and counted by
  method, status code, variant and model version (:mod:`engine.observability`).
- **Decoding**: bytes that are not the method's request message are answered
  INVALID_ARGUMENT naming the message type, instead of gRPC's own INTERNAL.

The wrapped handler of a method is built on its first call and reused while the method's
handler stays the same object (gRPC's generic handlers return the same one every call).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from engine.observability import (
    LATENCY,
    MODEL_REQUESTS,
    REQUEST_ID_HEADER,
    REQUESTS,
    SERVED_BY,
    SERVED_BY_HEADER,
    request_id,
)
from engine.observability import log as access_log  # the access log keeps its logger

EXEMPT_FROM_DRAIN = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_UNAVAILABLE = "server is shutting down; retry (another replica will answer)"


class ServingInterceptor(grpc.ServerInterceptor):
    """Drain gate, request ids and metrics, request decoding (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._draining = False
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def drain(self, timeout: float) -> bool:
        """Refuse new calls from now on; wait up to ``timeout`` s for those in handlers to
        end. True when none is left."""
        with self._lock:
            self._draining = True
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rpc = method.rsplit("/", 1)[-1]
        latency = LATENCY.labels(rpc)
        ok_plain = REQUESTS.labels(rpc, "OK", "")
        inner = handler.unary_unary
        decode = handler.request_deserializer
        message = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
        invalid = f"request is not a valid {message.full_name if message else 'request message'}"
        gated = not method.startswith(EXEMPT_FROM_DRAIN)
        lock, idle = self._lock, self._idle

        def behavior(payload: Any, context: grpc.ServicerContext) -> Any:
            if gated:
                with lock:
                    if self._draining:
                        refuse = True
                    else:
                        refuse = False
                        self._in_flight += 1
                if refuse:
                    context.abort(grpc.StatusCode.UNAVAILABLE, _UNAVAILABLE)
            rid = None
            for key, value in context.invocation_metadata() or ():
                if key == REQUEST_ID_HEADER:
                    rid = value
                    break
            rid = rid or uuid.uuid4().hex
            token = request_id.set(rid)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, rid), (SERVED_BY_HEADER, SERVED_BY)))
            start = time.perf_counter()
            response = None
            try:
                if decode is not None:
                    try:
                        request = decode(payload)
                    except Exception:  # protobuf's DecodeError, or its C implementation's
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
                else:
                    request = payload
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
                if name == "OK" and not variant:
                    ok_plain.inc()
                else:
                    REQUESTS.labels(rpc, name, variant).inc()
                for model in getattr(response, "models", ()):
                    MODEL_REQUESTS.labels(rpc, model.name, str(model.version), name).inc()
                if access_log.isEnabledFor(logging.DEBUG):  # the access log, off by default
                    access_log.debug("%s %s %.2f ms", rpc, name, elapsed * 1000)
                request_id.reset(token)
                if gated:
                    with lock:
                        self._in_flight -= 1
                        if self._in_flight == 0:
                            idle.notify_all()

        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=None, response_serializer=handler.response_serializer
        )
