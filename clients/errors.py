"""The one exception type the SDK raises for every failed RPC."""

from __future__ import annotations

import grpc


class ReachRankError(Exception):
    """An RPC failed: the gRPC status code, the server's message and the request id sent."""

    def __init__(self, code: grpc.StatusCode, message: str, request_id: str | None = None):
        super().__init__(
            f"{code.name}: {message}" + (f" [request {request_id}]" if request_id else "")
        )
        self.code = code
        self.message = message
        self.request_id = request_id

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, request_id: str | None) -> ReachRankError:
        """Wrap a grpc error (sync or asyncio) keeping its status code and details."""
        # grpc.RpcError itself declares no code()/details(); the raised objects (grpc.Call,
        # grpc.aio.AioRpcError) do.
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "", request_id)

    def __reduce__(self):
        # Keep the error picklable (multiprocessing, pytest-xdist) despite the custom __init__.
        return (type(self), (self.code, self.message, self.request_id))
