"""The Redis backing of :mod:`engine.state`: every replica reads and writes the same keys.

Layout (all under ``reachrank:``): ``h:<user>`` a sorted set of the user's history events
(member ``ts|i|item`` or ``ts|c|item``, score the time; the newest ``per_user`` kept);
``c:<user>`` the user's contacts (member ``ts|campaign``), both expiring ``key_ttl_s`` (90 days)
after the user's last write; sorted sets ``purchase``, ``optout``
and ``optin`` of user -> latest time (``ZADD GT``). Every write is an idempotent ``ZADD``, so a
replica that replays its feedback log at start (after a crash, or events it could not write while
the store was down) never counts an event twice.

Costs and bounds:
- A LogEvents call writes its events in one pipeline (one round trip) before it answers; when
  the store cannot take them they are kept in a bounded local queue and written when it is back.
- A history read is one ``ZRANGEBYSCORE`` per user, cached locally for ``cache_s``: what a
  replica serves is at most ``cache_s`` older than the store (the stated staleness bound; the
  replica that logged the event drops its cached entry at once).
- No store call holds a request longer than ``min(timeout_s, the RPC's time left)``: the call
  runs on a small pool and the request stops waiting; after a failure the store is skipped for
  ``retry_s`` (a store that hangs instead fills the small pool, and calls then skip it at
  once). A history read that does not come back serves the bundle's snapshot (plus the
  stale cache entry if any) and counts ``reachrank_state_store_degraded_total{op}``; contact
  reads fail closed (UNAVAILABLE: caps cannot be checked).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import numpy as np
import redis
from prometheus_client import Counter, Gauge
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.batching import request_deadline
from engine.errors import Unavailable
from engine.live_history import HISTORY_EVENTS

log = logging.getLogger(__name__)
T = TypeVar("T")
PREFIX = "reachrank:"
# One write = (sorted set key, {member: score}, keep the newest n or 0, ZADD GT).
Write = tuple[str, dict[str, int], int, bool]

DEGRADED = Counter(
    "reachrank_state_store_degraded",
    "Store calls answered without the shared store (snapshot/stale cache, or write queued)",
    ["op"],
)
PENDING = Gauge("reachrank_state_store_pending_writes", "Writes queued while the store is down")


class StoreDown(Exception):
    """The store did not answer within the wait allowed."""


class Guard:
    """Runs store calls on a small pool; the caller waits at most min(timeout, time left)."""

    def __init__(self, timeout_s: float, retry_s: float, threads: int = 4) -> None:
        self.timeout_s, self.retry_s = timeout_s, retry_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="state-store")
        self._threads = threads
        self._busy = 0
        self._lock = threading.Lock()
        self._down_until = 0.0

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def mark_down(self) -> None:
        self._down_until = time.monotonic() + self.retry_s

    def call(self, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        wait = self.timeout_s if timeout_s is None else timeout_s
        deadline = request_deadline.get()
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        with self._lock:
            if self.down or wait <= 0 or self._busy >= 2 * self._threads:
                raise StoreDown("store skipped")
            self._busy += 1
        future = self._pool.submit(self._run, fn)
        try:
            return future.result(wait)
        except FutureTimeout as exc:
            # Not marked down: a store that hangs fills the pool, and then calls skip it at once.
            raise StoreDown("store too slow") from exc
        except redis.RedisError as exc:
            self.mark_down()
            raise StoreDown(str(exc)) from exc

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        finally:
            with self._lock:
                self._busy -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RedisState:
    """Histories and contacts in one Redis database (a ``--state-store`` URL)."""

    def __init__(
        self,
        url: str,
        cache_s: float = 0.2,
        timeout_s: float = 0.05,
        retry_s: float = 0.5,
        per_user: int = 2000,
        contacts_per_user: int = 64,
        max_pending: int = 1_000_000,
        write_timeout_s: float = 0.5,
        key_ttl_s: int = 90 * 86400,
        socket_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=max(socket_timeout_s, timeout_s),
            socket_connect_timeout=max(0.5, timeout_s),
            retry=Retry(NoBackoff(), 0),  # the guard decides when to try again
            decode_responses=True,
        )
        self.guard = Guard(timeout_s, retry_s)
        # LogEvents already waits for its fsync: its store write may take longer than a read.
        self.write_timeout_s = write_timeout_s
        # Bounds the store's memory by active users (the embedded store keeps the last 1M).
        self.key_ttl_s = key_ttl_s
        self._wake = threading.Event()
        self._pending: deque[Write] = deque(maxlen=max_pending)
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self.histories = RedisHistories(self, per_user, cache_s, clock)
        self.contacts = RedisContacts(self, contacts_per_user)
        self._flusher = threading.Thread(target=self._flush_loop, name="state-flush", daemon=True)
        self._flusher.start()

    def write(self, writes: list[Write]) -> None:
        """Write in one pipeline, waiting at most ``write_timeout_s`` (and the RPC's deadline);
        queue them when the store is down or slow (a write that timed out may land twice:
        ZADD makes that harmless)."""
        if not writes:
            return
        try:
            self.guard.call(lambda: self._pipeline(writes), self.write_timeout_s)
        except StoreDown:
            DEGRADED.labels("write").inc()
            with self._pending_lock:
                self._pending.extend(writes)
                PENDING.set(len(self._pending))
            self._wake.set()

    def _pipeline(self, writes: Iterable[Write]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, members, keep, gt in writes:
            pipe.zadd(key, members, gt=gt)
            if keep:  # a per-user key: trimmed, and gone once the user is quiet for key_ttl_s
                pipe.zremrangebyrank(key, 0, -keep - 1)
                pipe.expire(key, self.key_ttl_s)
        pipe.execute()

    def _flush_loop(self) -> None:
        """Queued writes go out at once, then every ``retry_s`` until the store takes them."""
        while not self._stop.is_set():
            self._wake.wait(self.guard.retry_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.flush_pending()

    def flush_pending(self) -> bool:
        """Write what was queued while the store was down; True when nothing is left."""
        with self._pending_lock:
            batch = list(self._pending)
        if not batch:
            return True
        try:
            for start in range(0, len(batch), 5000):
                self._pipeline(batch[start : start + 5000])
        except redis.RedisError:
            return False
        with self._pending_lock:
            for _ in range(min(len(batch), len(self._pending))):
                self._pending.popleft()
            PENDING.set(len(self._pending))
            left = not self._pending
        log.info("state store back: %d queued writes written", len(batch))
        return left

    def forget(self, user_id: str) -> dict[str, int]:
        """Erase the user's keys and their entries in the shared sets, and any queued write
        of theirs (erasure). Not bounded by the request guard: an erasure must not be
        skipped because the store is slow (a RedisError fails the call instead)."""
        with self._pending_lock:
            user_keys = (f"{PREFIX}h:{user_id}", f"{PREFIX}c:{user_id}")
            kept = [w for w in self._pending if w[0] not in user_keys and user_id not in w[1]]
            queued = len(self._pending) - len(kept)
            self._pending.clear()
            self._pending.extend(kept)
            PENDING.set(len(self._pending))
        history, contacts = f"{PREFIX}h:{user_id}", f"{PREFIX}c:{user_id}"
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(history)
        pipe.zcard(contacts)
        pipe.delete(history, contacts)
        for shared in ("purchase", "optout", "optin"):
            pipe.zrem(f"{PREFIX}{shared}", user_id)
        events, contacted, _, *shared_entries = pipe.execute()
        self.histories.drop_cached(user_id)
        self._rewrite_persistence()
        return {
            "state_histories": int(events),
            "state_contacts": int(contacted) + int(sum(shared_entries)),
            "state_queued_writes": queued,
        }

    def _rewrite_persistence(self, timeout_s: float = 60.0) -> None:
        """Rewrite the store's files so deleted data leaves the disk too: the append-only
        file logs every command (the user's ZADDs) until rewritten from the live data, and a
        snapshot keeps what it saw until the next one. Waits until both are done."""
        info = self.client.info("persistence")
        if info.get("aof_enabled"):
            self.client.bgrewriteaof()
        if info.get("rdb_last_bgsave_status") == "ok" and info.get("rdb_saves", 0):
            self.client.bgsave(schedule=True)
        deadline = time.monotonic() + timeout_s
        busy = ("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")
        while any(self.client.info("persistence").get(k) for k in busy):
            if time.monotonic() > deadline:
                raise TimeoutError("the state store did not finish rewriting its files")
            time.sleep(0.01)  # Redis offers no notification of a finished rewrite

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.flush_pending()
        self.guard.close()
        self.client.close()


class RedisHistories:
    """:class:`engine.state.HistoryStore` over Redis, with a local read cache."""

    def __init__(
        self, state: RedisState, per_user: int, cache_s: float, clock: Callable[[], float]
    ) -> None:
        self.state, self.per_user, self.cache_s, self.clock = state, per_user, cache_s, clock
        self.max_cached = 100_000
        self._lock = threading.Lock()
        # user -> (monotonic time fetched, [(ts, item, click)])
        self._cache: OrderedDict[str, tuple[float, list[tuple[int, str, bool]]]] = OrderedDict()
        # Per-user reads asked for (`since` calls, cached or not): privacy tests prove a
        # request read none.
        self.reads = 0

    def observe(self, events: Iterable[Any]) -> None:
        now = int(time.time() * 1000)
        by_user: dict[str, dict[str, int]] = {}
        count = 0
        for e in events:
            if e.event not in HISTORY_EVENTS:
                continue
            ts = int(e.ts_unix_ms) or now
            kind = "c" if e.event == "click" else "i"
            by_user.setdefault(e.user_id, {})[f"{ts}|{kind}|{e.item_id}"] = ts
            count += 1
            if count >= 5000:  # a replay: bounded pipelines
                self._write(by_user)
                by_user, count = {}, 0
        self._write(by_user)

    def _write(self, by_user: dict[str, dict[str, int]]) -> None:
        if not by_user:
            return
        self.state.write([(f"{PREFIX}h:{u}", m, self.per_user, False) for u, m in by_user.items()])
        with self._lock:  # this replica reads its own writes at once
            for user in by_user:
                self._cache.pop(user, None)

    def since(self, user_id: str, cut_ms: int) -> list[tuple[str, bool]]:
        with self._lock:
            self.reads += 1
            entry = self._cache.get(user_id)
        if entry is None or self.clock() - entry[0] > self.cache_s:
            try:
                events = self.state.guard.call(lambda: self._refresh(user_id))
            except StoreDown:
                DEGRADED.labels("read").inc()
                events = entry[1] if entry is not None else []  # the snapshot (+ stale cache)
        else:
            events = entry[1]
        return [(item, click) for ts, item, click in events if ts > cut_ms]

    def drop_cached(self, user_id: str) -> None:
        with self._lock:
            self._cache.pop(user_id, None)

    def _refresh(self, user_id: str) -> list[tuple[int, str, bool]]:
        """Read the user's events and cache them, stamped with the time the read began (an
        answer that comes after its request stopped waiting still serves the next one)."""
        fetched = self.clock()
        events = self._fetch(user_id)
        with self._lock:
            self._cache[user_id] = (fetched, events)
            self._cache.move_to_end(user_id)
            if len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return events

    def _fetch(self, user_id: str) -> list[tuple[int, str, bool]]:
        out = []
        for member in self.state.client.zrangebyscore(f"{PREFIX}h:{user_id}", "-inf", "+inf"):
            ts, kind, item = member.split("|", 2)
            out.append((int(ts), item, kind == "c"))
        return out


class RedisContacts:
    """:class:`engine.contacts.ContactStore` over Redis; reads fail closed when it is down."""

    def __init__(self, state: RedisState, per_user: int) -> None:
        self.state, self.per_user = state, per_user

    def observe(self, events: Iterable[Any]) -> None:
        now = int(time.time() * 1000)
        writes: list[Write] = []
        for e in events:
            ts = int(e.ts_unix_ms) or now
            if e.event == "contact":
                member = f"{ts}|{getattr(e, 'item_id', '')}"
                writes.append((f"{PREFIX}c:{e.user_id}", {member: ts}, self.per_user, False))
            elif e.event == "purchase":
                writes.append((f"{PREFIX}purchase", {e.user_id: ts}, 0, True))
            elif e.event in ("opt_out", "opt_in"):
                writes.append((f"{PREFIX}{e.event.replace('_', '')}", {e.user_id: ts}, 0, True))
        self.state.write(writes)

    def _read(self, fn: Callable[[], T], size: int) -> T:
        try:
            # Audiences are large: a second per 100k users at most, within the RPC's deadline.
            return self.state.guard.call(fn, max(self.state.guard.timeout_s, size / 100_000))
        except StoreDown as exc:
            DEGRADED.labels("contacts").inc()
            raise Unavailable(
                "the shared state store is unreachable, so contact caps and consent cannot be "
                "checked; retry shortly"
            ) from exc

    def contacts_since(self, user_ids: Sequence[str], since_ms: int) -> np.ndarray:
        def run() -> list[int]:
            pipe = self.state.client.pipeline(transaction=False)
            for u in user_ids:
                pipe.zcount(f"{PREFIX}c:{u}", since_ms, "+inf")
            return pipe.execute()

        return np.array(self._read(run, len(user_ids)) if user_ids else [], dtype=np.int64)

    def _scores(self, key: str, user_ids: Sequence[str]) -> np.ndarray:
        if not user_ids:
            return np.zeros(0, dtype=np.int64)
        scores = self._read(lambda: self.state.client.zmscore(key, list(user_ids)), len(user_ids))
        return np.array([int(s) if s is not None else 0 for s in scores], dtype=np.int64)

    def last_purchase_ms(self, user_ids: Sequence[str]) -> np.ndarray:
        return self._scores(f"{PREFIX}purchase", user_ids)

    def opted_out(self, user_ids: Sequence[str]) -> np.ndarray:
        out = self._scores(f"{PREFIX}optout", user_ids)
        back = self._scores(f"{PREFIX}optin", user_ids)
        return (out > 0) & (out >= back)
