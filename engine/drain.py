"""Graceful drain: once a server is told to stop, calls that have not started are refused
with UNAVAILABLE (which clients retry, on another replica) while the calls already in a
handler finish; the server stops when the last one has.

gRPC's own `server.stop(grace)` answers calls arriving during the grace with CANCELLED, which
a client cannot tell from a call that failed half-way, so it must not retry it: during a
rolling deploy those would be user-visible errors. Health and reflection stay open, so load
balancers read NOT_SERVING instead of an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class DrainInterceptor(grpc.ServerInterceptor):
    """Counts unary calls inside handlers; after `drain()` refuses new ones with UNAVAILABLE."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._draining = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is None
            or handler_call_details.method.startswith(EXEMPT)
        ):
            return handler
        inner = handler.unary_unary

        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                refuse = self._draining
                if not refuse:
                    self._in_flight += 1
            if refuse:
                context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "server is shutting down; retry (another replica will answer)",
                )
            try:
                return inner(request, context)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    if self._in_flight == 0:
                        self._idle.notify_all()

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def drain(self, timeout: float) -> bool:
        """Refuse new calls from now on; wait up to `timeout` s for those in handlers to end.
        True when none is left."""
        with self._lock:
            self._draining = True
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)
