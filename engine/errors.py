"""Domain errors and their gRPC status codes: pipelines raise these, one decorator maps them."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base class; ``code`` is the gRPC status the caller receives with the message."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServingError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServingError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ServingError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServingError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServingError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(ServingError):
    """The caller cancelled the RPC (or its connection went away) before its work ran."""

    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(ServingError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class BundleError(Exception):
    """A model bundle that cannot be served, with the reason."""
