"""The life of one logical call: its deadline, request id, metadata and retry decisions.

Retries use exponential back-off with full jitter and stop at the call's deadline. The sync
and asyncio clients drive the same `CallAttempts`, so both behave identically.
"""

from __future__ import annotations

import random
import time
import uuid

import grpc

from clients.channel import call_metadata
from clients.errors import ReachRankError
from clients.options import ClientOptions

# UNAVAILABLE usually means the call never reached a healthy server. Resending is safe for
# reads and for the idempotent admin calls; LogEvents opts out (it appends).
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

# Health answers worth waiting through in wait_ready: a starting server refuses connections.
NOT_READY_CODES: frozenset[grpc.StatusCode] = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)

# Pause between health checks while waiting for a server to become ready.
READY_POLL_S = 0.05


def new_request_id() -> str:
    """A fresh request id (uuid4), sent as `x-request-id`."""
    return str(uuid.uuid4())


def backoff_bound(options: ClientOptions, attempt: int) -> float:
    """Upper bound of the sleep after failed attempt number `attempt` (1-based)."""
    return min(options.max_backoff, options.initial_backoff * options.multiplier ** (attempt - 1))


def retry_delay(
    options: ClientOptions,
    attempt: int,
    code: grpc.StatusCode,
    remaining: float,
    rng: random.Random,
) -> float | None:
    """Seconds to sleep before the next attempt, or None when the call must fail now.

    `remaining` is the time left before the call's deadline: a retry that could not start
    before it is not attempted.
    """
    if code not in RETRYABLE_CODES or attempt >= options.max_attempts:
        return None
    delay = rng.uniform(0.0, backoff_bound(options, attempt))
    return delay if delay < remaining else None


class CallAttempts:
    """Deadline and retry bookkeeping of one call; the client supplies the transport.

    Usage: ``timeout = attempts.start()`` before each attempt, and on a grpc.RpcError
    ``delay = attempts.failed(error)`` (which raises `ReachRankError` when the call is over),
    then sleep `delay` and start again.
    """

    def __init__(
        self,
        options: ClientOptions,
        timeout: float | None,
        request_id: str | None,
        rng: random.Random,
        retryable: bool = True,
    ) -> None:
        self.options = options
        # False for calls that must not run twice (LogEvents appends): one attempt only.
        self.retryable = retryable
        self.budget = options.timeout if timeout is None else timeout
        self.deadline = time.monotonic() + self.budget
        self.request_id = request_id or new_request_id()
        # The same request id on every attempt, so server logs show the retries as one call.
        self.metadata = call_metadata(options, self.request_id)
        self.attempt = 0
        self._rng = rng

    def start(self) -> float:
        """Begin the next attempt and return its timeout: the time left to the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ReachRankError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline of {self.budget}s exceeded after {self.attempt} attempt(s)",
                self.request_id,
            )
        self.attempt += 1
        return remaining

    def failed(self, error: grpc.RpcError) -> float:
        """Seconds to wait before retrying `error`; raises it as `ReachRankError` if final."""
        wrapped = ReachRankError.from_rpc_error(error, self.request_id)
        remaining = self.deadline - time.monotonic()
        delay = retry_delay(self.options, self.attempt, wrapped.code, remaining, self._rng)
        if delay is None or not self.retryable:
            raise wrapped from None
        return delay


class ReadyWait:
    """Bookkeeping of `wait_ready`: poll health until SERVING or the timeout passes."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last = "no answer"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def observe(self, status: str) -> bool:
        """Record a health answer; True when the server is ready."""
        self.last = status
        return status == "SERVING"

    def observe_error(self, error: ReachRankError) -> None:
        """Record a failed check; re-raise errors that waiting will not cure (UNIMPLEMENTED...)."""
        if error.code not in NOT_READY_CODES:
            raise error
        self.last = error.code.name

    def pause(self) -> float:
        return min(READY_POLL_S, max(self.remaining(), 0.0))

    def timed_out(self) -> ReachRankError:
        return ReachRankError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"server not SERVING after {self.timeout}s (last: {self.last})",
        )
