"""Retries of UNAVAILABLE with exponential back-off and jitter, bounded by attempts and deadline."""

from __future__ import annotations

import random

import grpc
import pytest

from clients import ClientOptions, ReachRankClient, ReachRankError
from clients.retry import backoff_bound, retry_delay

from .conftest import FakeServer

FAST = {"initial_backoff": 0.01, "max_backoff": 0.02, "timeout": 5.0}


def test_unavailable_is_retried_until_success(fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 2
    with ReachRankClient(fake_server.target, max_attempts=3, **FAST) as sdk:
        result = sdk.recommend("u1", 2, request_id="r-1")
    assert result.item_ids == ["i0", "i1"]
    calls = fake_server.servicer.calls
    assert len(calls) == 3
    # One logical call: every attempt carries the same request id.
    assert {call.metadata["x-request-id"] for call in calls} == {"r-1"}


def test_retries_stop_after_max_attempts(fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 10
    sdk = ReachRankClient(fake_server.target, max_attempts=3, **FAST)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.rank_ads("u1", [{"ad_id": "a", "bid": 1.0}])
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == "warming up"
    assert len(fake_server.servicer.calls) == 3


def test_one_attempt_means_no_retry(fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 1
    sdk = ReachRankClient(fake_server.target, max_attempts=1, **FAST)
    with sdk, pytest.raises(ReachRankError):
        sdk.recommend("u1", 1)
    assert len(fake_server.servicer.calls) == 1


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_other_codes_are_not_retried(fake_server: FakeServer, code: grpc.StatusCode) -> None:
    fake_server.servicer.abort_with = (code, "no")
    sdk = ReachRankClient(fake_server.target, max_attempts=5, **FAST)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.recommend("u1", 1)
    assert caught.value.code is code
    assert len(fake_server.servicer.calls) == 1


def test_backoff_never_outlives_the_deadline(fake_server: FakeServer) -> None:
    fake_server.servicer.fail_next = 100
    options = ClientOptions(timeout=0.3, max_attempts=100, initial_backoff=0.05, max_backoff=0.05)
    sdk = ReachRankClient(fake_server.target, options)
    with sdk, pytest.raises(ReachRankError) as caught:
        sdk.recommend("u1", 1)
    # Either the last UNAVAILABLE (no time left for another back-off) or the deadline itself.
    assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    # 0.3 s of budget with sleeps of at most 0.05 s: far fewer than 100 attempts (a stalled
    # machine makes fewer, never more).
    assert 1 <= len(fake_server.servicer.calls) < 100


def test_backoff_bound_grows_geometrically_up_to_the_cap() -> None:
    options = ClientOptions(initial_backoff=0.1, multiplier=2.0, max_backoff=0.5)
    assert [backoff_bound(options, n) for n in range(1, 6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.5, 0.5]
    )


def test_retry_delay_is_jittered_within_the_bound() -> None:
    options = ClientOptions(initial_backoff=0.1, multiplier=2.0, max_backoff=1.0, max_attempts=10)
    rng = random.Random(0)
    delays = [retry_delay(options, 3, grpc.StatusCode.UNAVAILABLE, 10.0, rng) for _ in range(200)]
    assert all(delay is not None and 0.0 <= delay <= 0.4 for delay in delays)
    # Full jitter spreads retries over the whole interval instead of synchronising them.
    assert min(delays) < 0.1 and max(delays) > 0.3


def test_retry_delay_refuses_what_must_fail_now() -> None:
    options = ClientOptions(max_attempts=3, initial_backoff=0.1)
    rng = random.Random(0)
    assert retry_delay(options, 1, grpc.StatusCode.NOT_FOUND, 10.0, rng) is None
    assert retry_delay(options, 3, grpc.StatusCode.UNAVAILABLE, 10.0, rng) is None
    assert retry_delay(options, 1, grpc.StatusCode.UNAVAILABLE, 0.0, rng) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout": 0},
        {"max_attempts": 0},
        {"multiplier": 0.5},
        {"initial_backoff": -1},
        {"certificate_chain": b"pem"},
    ],
)
def test_invalid_options_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        ClientOptions(**bad)
