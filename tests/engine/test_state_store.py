"""engine.state: the embedded and Redis stores answer the same (histories and contacts), the
Redis one shares state between processes within its stated staleness, and a down or silent
store never holds a request: it serves the snapshot, counts it, and catches up when back."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.replica_bed import RedisServer, free_port
from engine.batching import request_deadline
from engine.settings import Settings
from engine.state import EmbeddedState, StateStore, open_state_store
from engine.state.redis_store import DEGRADED, RedisState


def event(user: str, item: str, kind: str, ts_ms: int) -> SimpleNamespace:
    return SimpleNamespace(user_id=user, item_id=item, event=kind, ts_unix_ms=ts_ms)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "redis"])
def store(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[StateStore]:
    if request.param == "embedded":
        state: StateStore = EmbeddedState()
    else:
        db = free_port() % 16  # a fresh-enough database per test; flushed first
        state = RedisState(f"redis://127.0.0.1:{redis_server.port}/{db}", cache_s=0.0)
        state.client.flushdb()
    yield state
    state.close()


def test_both_stores_keep_the_same_histories_and_contacts(store: StateStore) -> None:
    store.histories.observe(
        [
            event("a", "i1", "impression", 10),
            event("a", "i1", "click", 20),
            event("a", "i2", "purchase", 30),  # not a history event
            event("b", "i3", "impression", 40),
        ]
    )
    assert store.histories.since("a", 0) == [("i1", False), ("i1", True)]
    assert store.histories.since("a", 10) == [("i1", True)]  # strictly after the cut
    assert store.histories.since("nobody", 0) == []
    store.contacts.observe(
        [
            event("a", "camp", "contact", 100),
            event("a", "camp", "contact", 200),
            event("a", "x", "purchase", 150),
            event("b", "", "opt_out", 100),
            event("c", "", "opt_out", 100),
            event("c", "", "opt_in", 300),
        ]
    )
    users = ["a", "b", "c", "d"]
    assert store.contacts.contacts_since(users, 150).tolist() == [1, 0, 0, 0]
    assert store.contacts.last_purchase_ms(users).tolist() == [150, 0, 0, 0]
    assert store.contacts.opted_out(users).tolist() == [False, True, False, False]


def test_redis_histories_keep_the_newest_per_user_and_replays_count_once(
    redis_server: RedisServer,
) -> None:
    state = RedisState(redis_server.url, cache_s=0.0, per_user=3)
    state.client.flushdb()
    try:
        batch = [event("a", f"i{k}", "impression", 50 + k) for k in range(5)]
        state.histories.observe(batch)
        state.histories.observe(batch)  # a replica replaying its log after a crash
        assert state.histories.since("a", 0) == [("i2", False), ("i3", False), ("i4", False)]
        assert 0 < state.client.ttl("reachrank:h:a") <= state.key_ttl_s  # quiet users expire
    finally:
        state.close()


def test_another_replica_sees_a_write_within_the_cache_staleness(
    redis_server: RedisServer,
) -> None:
    """The bound: a replica's read is at most ``cache_s`` older than the store; the replica
    that wrote reads its own write at once."""
    now = [0.0]
    a = RedisState(redis_server.url, cache_s=0.2)
    b = RedisState(redis_server.url, cache_s=0.2, clock=lambda: now[0])
    a.client.flushdb()
    try:
        assert b.histories.since("u", 0) == []  # cached at t=0
        a.histories.observe([event("u", "i1", "click", 5)])
        assert a.histories.since("u", 0) == [("i1", True)]
        now[0] = 0.19
        assert b.histories.since("u", 0) == []  # within the bound: may still be stale
        now[0] = 0.21
        assert b.histories.since("u", 0) == [("i1", True)]  # past it: never
    finally:
        a.close()
        b.close()


def test_a_down_store_serves_the_snapshot_counts_it_and_catches_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet: nothing listens on its port
    state = RedisState(server.url, cache_s=0.0, retry_s=0.05)
    try:
        reads, writes = DEGRADED.labels("read")._value.get(), DEGRADED.labels("write")._value.get()
        state.histories.observe([event("u", "i1", "click", 5)])  # acknowledged, queued
        assert state.histories.since("u", 0) == []  # the bundle's snapshot, counted
        assert DEGRADED.labels("read")._value.get() > reads
        assert DEGRADED.labels("write")._value.get() == writes + 1
        with pytest.raises(Exception, match="contact caps"):
            state.contacts.contacts_since(["u"], 0)  # caps fail closed
        server.start()
        assert state.flush_pending()  # the queued write lands once the store is back
        state.guard._down_until = 0.0
        assert state.histories.since("u", 0) == [("i1", True)]
    finally:
        state.close()
        server.stop()


def test_a_silent_store_never_holds_a_request_past_its_deadline() -> None:
    """A store that accepts connections and never answers: the read returns the snapshot while
    the store call is still stuck (a socket timeout far beyond the request's deadline)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nobody ever reads them
        port = silent.getsockname()[1]
        state = RedisState(
            f"redis://127.0.0.1:{port}/0", timeout_s=5.0, socket_timeout_s=600, cache_s=0.0
        )
        token = request_deadline.set(time.monotonic() + 0.05)
        try:
            assert state.histories.since("u", 0) == []
            assert state.guard._busy == 1  # answered while the store call still waits
            stuck = 2 * state.guard._threads
            for _ in range(stuck):  # later requests wait on it too, until the pool is full ...
                request_deadline.set(time.monotonic() + 0.05)
                assert state.histories.since("u", 0) == []
            assert state.guard._busy == stuck
            request_deadline.set(time.monotonic() + 60)
            assert state.histories.since("u", 0) == []  # ... then skip it without waiting
            assert state.guard._busy == stuck
        finally:
            request_deadline.reset(token)
            state.guard.close()
    # Closing the listener resets the stuck connection; the pool thread ends.


def test_the_state_store_setting_picks_the_backing(redis_server: RedisServer) -> None:
    assert isinstance(open_state_store(Settings()), EmbeddedState)
    redis_state = open_state_store(Settings(state_store=redis_server.url))
    assert isinstance(redis_state, RedisState)
    redis_state.close()
    with pytest.raises(ValueError, match=r"redis://HOST:PORT/DB"):
        open_state_store(Settings(state_store="memcached://x"))
