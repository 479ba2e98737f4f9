"""Campaign spend and pacing state, shared by every worker and replica: embedded (this process)
or in the Redis of ``--state-store`` (:func:`spend_store_for`).

Per campaign-day key (``<campaign>|<local date>``): ``billed`` (charges of logged clicks and
purchases, and CPM impressions), ``served`` (the expected charge of every impression served),
the expected charge served in each minute of the day (what the budget check counts for
impressions whose clicks may still come), and the pacing controller's state (interval index,
throttle, spend at the interval's start, estimated unthrottled spend rate). Pacing state is
replaced only by a newer interval (compare-and-set), so the first worker to reach an interval
decides its throttle for all.

Redis layout: one hash ``reachrank:spend:<key>`` (fields ``b``, ``s``, ``e<minute>``, ``pk``,
``pp``, ``ps``, ``pr``), expiring three days after its last write. Each batch of increments is
one Lua script run under a write id (``reachrank:spend:w:<id>``, kept a day): a batch whose
reply was lost (a timeout after Redis applied it) is retried under the same id and counted
once. The pacing CAS is a small Lua script too; both are atomic in Redis.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from engine.errors import Unavailable

if TYPE_CHECKING:
    from engine.state import StateStore
    from engine.state.redis_store import RedisState

KEY_TTL_S = 3 * 86400
WRITE_ID_TTL_S = 86400  # how long a write id is remembered (a retried batch within it counts once)
MINUTES = 25 * 60  # minute buckets of a local day (25 hours on the day clocks go back)


@dataclass(frozen=True)
class Pace:
    interval: int = -1  # index of the pacing interval this state was decided for (-1: none)
    throttle: float = 1.0
    spend_at_start: float = 0.0
    rate: float = 0.0  # estimated unthrottled spend per unit of traffic share (0: unknown)


@dataclass(frozen=True)
class Spend:
    billed: float = 0.0
    served: float = 0.0
    recent: float = 0.0  # expected charges served in the buckets asked for
    pace: Pace = field(default_factory=Pace)


# One increment: (campaign-day key, minute bucket, expected charge, billed charge). An expected
# charge counts in ``served``, and in its minute bucket unless billed at once (CPM impressions).
Add = tuple[str, int, float, float]


class SpendStore(Protocol):
    def read(self, keys: Sequence[str], buckets: range) -> list[Spend]:
        """Each key's state, ``recent`` summed over the minute ``buckets`` (a step-1 range)."""

    def add(self, adds: Sequence[Add]) -> None:
        """Add charges (atomically per field)."""

    def set_pace(self, key: str, pace: Pace) -> bool:
        """Store ``pace`` if the stored one is for an earlier interval; True if stored."""


class EmbeddedSpend:
    """:class:`SpendStore` in this process's memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, list[float]] = {}  # key -> [billed, served]
        self._buckets: dict[str, list[float]] = {}  # key -> expected charge per minute
        self._pace: dict[str, Pace] = {}

    def read(self, keys: Sequence[str], buckets: range) -> list[Spend]:
        out = []
        with self._lock:
            for key in keys:
                billed, served = self._totals.get(key, (0.0, 0.0))
                per = self._buckets.get(key)
                recent = sum(per[buckets.start : buckets.stop]) if per and buckets else 0.0
                out.append(Spend(billed, served, recent, self._pace.get(key, Pace())))
        return out

    def add(self, adds: Sequence[Add]) -> None:
        with self._lock:
            for key, bucket, expected, billed in adds:
                totals = self._totals.setdefault(key, [0.0, 0.0])
                totals[0] += billed
                totals[1] += expected
                if expected and not billed:  # billed at serve (CPM): no click to wait for
                    per = self._buckets.get(key)
                    if per is None:
                        per = self._buckets[key] = [0.0] * MINUTES
                    per[min(bucket, MINUTES - 1)] += expected

    def set_pace(self, key: str, pace: Pace) -> bool:
        with self._lock:
            if self._pace.get(key, Pace()).interval >= pace.interval:
                return False
            self._pace[key] = pace
            return True


_SET_PACE = """
local k = tonumber(redis.call('HGET', KEYS[1], 'pk') or '-1')
if k >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'pk', ARGV[1], 'pp', ARGV[2], 'ps', ARGV[3], 'pr', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


# KEYS[1]: the write id's key; KEYS[i+1]: the i-th increment's hash. ARGV: the ids' and the
# hashes' TTLs, then per increment: billed, expected, the minute field ('' for none).
_ADD = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 3
  local billed, expected, minute = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if tonumber(billed) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[i], 'b', billed) end
  if tonumber(expected) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[i], 's', expected) end
  if minute ~= '' then redis.call('HINCRBYFLOAT', KEYS[i], minute, expected) end
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 1
"""


class RedisSpend:
    """:class:`SpendStore` in the shared Redis. Reads fail closed (UNAVAILABLE: a budget that
    cannot be read cannot be enforced); increments that cannot be written wait in a local queue
    and go out, under their write ids, with the next write that gets through."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self._set_pace = state.client.register_script(_SET_PACE)
        self._add = state.client.register_script(_ADD)
        self._pending: deque[tuple[str, Sequence[Add]]] = deque(maxlen=100_000)
        self._lock = threading.Lock()

    @staticmethod
    def _key(key: str) -> str:
        return f"reachrank:spend:{key}"

    def _call(self, fn, what: str):  # type: ignore[no-untyped-def]
        from engine.state.redis_store import StoreDown

        try:
            return self.state.guard.call(fn)
        except StoreDown as exc:
            raise Unavailable(
                f"the shared state store is unreachable, so campaign {what} cannot be checked; "
                "retry shortly"
            ) from exc

    def read(self, keys: Sequence[str], buckets: range) -> list[Spend]:
        fields = ["b", "s", "pk", "pp", "ps", "pr", *(f"e{b}" for b in buckets)]

        def run() -> list[list[str | None]]:
            pipe = self.state.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._key(key), fields)
            return pipe.execute()

        rows = self._call(run, "budgets") if keys else []
        out = []
        for values in rows:
            b, s, pk, pp, ps, pr, *recent = (float(v) if v is not None else None for v in values)
            pace = Pace() if pk is None else Pace(int(pk), pp or 0.0, ps or 0.0, pr or 0.0)
            out.append(Spend(b or 0.0, s or 0.0, sum(r for r in recent if r), pace))
        return out

    def add(self, adds: Sequence[Add]) -> None:
        from engine.state.redis_store import StoreDown

        with self._lock:
            batches = [*self._pending, (uuid.uuid4().hex, adds)]
            self._pending.clear()

        def run() -> None:
            pipe = self.state.client.pipeline(transaction=False)
            for write_id, batch in batches:
                keys = [f"reachrank:spend:w:{write_id}", *(self._key(a[0]) for a in batch)]
                args: list[str | float | int] = [WRITE_ID_TTL_S, KEY_TTL_S]
                for _, bucket, expected, billed in batch:
                    minute = f"e{bucket}" if expected and not billed else ""
                    args += [repr(float(billed)), repr(float(expected)), minute]
                self._add(keys=keys, args=args, client=pipe)
            pipe.execute()

        try:
            self.state.guard.call(run, self.state.write_timeout_s)
        except StoreDown:
            with self._lock:  # retried with the next add that gets through, each under its id
                self._pending.extendleft(reversed(batches))

    def set_pace(self, key: str, pace: Pace) -> bool:
        args = [pace.interval, pace.throttle, pace.spend_at_start, pace.rate, KEY_TTL_S]
        return bool(self._call(lambda: self._set_pace(keys=[self._key(key)], args=args), "pacing"))


def spend_store_for(state: StateStore | None) -> SpendStore:
    """The spend store beside ``state``: in its Redis when it is the Redis one, else embedded."""
    from engine.state.redis_store import RedisState

    return RedisSpend(state) if isinstance(state, RedisState) else EmbeddedSpend()
