"""The gRPC adapter every servicer shares: domain errors become statuses in one place, and the
RPC's deadline and liveness reach the code that queues work (:mod:`engine.batching`).

- ``ServingError`` subclasses carry their own status code (``engine.errors``).
- ``BundleError`` (a bundle that cannot be served: load, reload, an experiment arm's model)
  is always FAILED_PRECONDITION: the request was fine, the repository is not.
- Anything else is logged with its type and stack, never its message (messages of NumPy,
  onnxruntime or a parser may quote request values, i.e. user features), and answered
  INTERNAL; the server keeps serving.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from engine.batching import request_alive, request_deadline
from engine.errors import BundleError, ServingError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The status a domain exception is answered with (INTERNAL for anything unexpected)."""
    if isinstance(exc, ServingError):
        return exc.code
    if isinstance(exc, BundleError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def grpc_errors(method: F) -> F:
    """Decorate a servicer method: deadline/liveness context in, one status per error out."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        token = request_deadline.set(
            time.monotonic() + remaining if remaining is not None else None
        )
        alive = request_alive.set(context.is_active)
        try:
            return method(self, request, context)
        except (ServingError, BundleError) as exc:
            context.abort(status_of(exc), str(exc))
        except Exception as exc:
            stack = "".join(traceback.format_tb(exc.__traceback__))
            log.error("%s failed: %s (message withheld)\n%s", name, type(exc).__name__, stack)
            context.abort(grpc.StatusCode.INTERNAL, f"{name} failed on the server; see its log")
        finally:
            request_alive.reset(alive)
            request_deadline.reset(token)

    return wrapper  # type: ignore[return-value]
