"""Request decoding as a domain error: bytes that are not the method's request message are
answered INVALID_ARGUMENT naming the message type, instead of gRPC's own INTERNAL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


class DecodingInterceptor(grpc.ServerInterceptor):
    """Takes decoding of unary requests over from gRPC, which answers INTERNAL when it fails."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        decode, inner = handler.request_deserializer, handler.unary_unary
        message = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
        name = message.full_name if message is not None else "request message"

        def behavior(payload: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = decode(payload)
            except Exception:  # protobuf's DecodeError, or its C implementation's errors
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {name} message"
                )
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=None, response_serializer=handler.response_serializer
        )
