"""Frequency-cap counters, shared by every worker and replica: embedded (this process, under a
lock) or in the Redis of ``--state-store`` (:func:`cap_store_for`).

A counter key names the scope, the user and the fixed window (``ad:<ad>:<user>:<window>``);
``reserve`` checks every counter of one impression against its limit and increments them all,
or none, atomically (a Lua script in Redis), so concurrent requests never exceed a cap.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from engine.errors import Unavailable

if TYPE_CHECKING:
    from engine.state import StateStore
    from engine.state.redis_store import RedisState

# One impression's counters: (keys, their limits, each key's lifetime in seconds).
Reservation = tuple[Sequence[str], Sequence[int], Sequence[int]]


class CapStore(Protocol):
    def counts(self, keys: Sequence[str]) -> list[int]:
        """Current count of each key (0 when absent or expired)."""

    def reserve(self, reservations: Sequence[Reservation], now_ms: int) -> list[bool]:
        """For each reservation in order: if every key is below its limit, increment them all
        and answer True; else change nothing and answer False."""


class EmbeddedCaps:
    """:class:`CapStore` in this process's memory (expired windows purged as it grows)."""

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (count, expires at ms)
        self.max_keys = max_keys

    def counts(self, keys: Sequence[str]) -> list[int]:
        with self._lock:
            return [self._counts.get(k, (0, 0))[0] for k in keys]

    def reserve(self, reservations: Sequence[Reservation], now_ms: int) -> list[bool]:
        out = []
        with self._lock:
            if len(self._counts) > self.max_keys:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now_ms}
            for keys, limits, ttls in reservations:
                current = [self._counts.get(k, (0, 0)) for k in keys]
                ok = all(c < limit for (c, _), limit in zip(current, limits, strict=True))
                if ok:
                    for key, (c, expires), ttl in zip(keys, current, ttls, strict=True):
                        self._counts[key] = (c + 1, max(expires, now_ms + 1000 * ttl))
                out.append(ok)
        return out


_RESERVE = """
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[i]) then return 0 end
end
for i = 1, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[#KEYS + i], 'NX')
end
return 1
"""


class RedisCaps:
    """:class:`CapStore` in the shared Redis; fails closed (UNAVAILABLE) when it is down."""

    PREFIX = "reachrank:fc:"

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self._reserve = state.client.register_script(_RESERVE)

    def _call(self, fn):  # type: ignore[no-untyped-def]
        from engine.state.redis_store import StoreDown

        try:
            return self.state.guard.call(fn)
        except StoreDown as exc:
            raise Unavailable(
                "the shared state store is unreachable, so frequency caps cannot be checked; "
                "retry shortly"
            ) from exc

    def counts(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        values = self._call(lambda: self.state.client.mget([self.PREFIX + k for k in keys]))
        return [int(v) if v is not None else 0 for v in values]

    def reserve(self, reservations: Sequence[Reservation], now_ms: int) -> list[bool]:
        def run() -> list[int]:
            pipe = self.state.client.pipeline(transaction=False)
            for keys, limits, ttls in reservations:
                self._reserve(
                    keys=[self.PREFIX + k for k in keys], args=[*limits, *ttls], client=pipe
                )
            return pipe.execute()

        return [bool(r) for r in self._call(run)] if reservations else []


def cap_store_for(state: StateStore | None) -> CapStore:
    """The cap store beside ``state``: in its Redis when it is the Redis one, else embedded."""
    from engine.state.redis_store import RedisState

    return RedisCaps(state) if isinstance(state, RedisState) else EmbeddedCaps()
