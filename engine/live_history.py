"""Live user histories: the impressions and clicks this server logged (LogEvents), so the CTR
models' history features move with the user instead of staying at the training cut.

A CTR bundle ships each user's history as of the end of its training log (`history.as_of_ms`
in the manifest). `LiveHistory` keeps the events logged here since the process started, newest
first out when a user exceeds `per_user` or the store exceeds `max_users` (least recently
active user dropped); `CTRModel.features` adds the ones newer than its bundle's cut to the
snapshot counts and re-derives the features with the trainer's own definitions
(`kernels.featurize.history_values`, the schema's transforms).

Scope: one process. At start the server replays its feedback log since the oldest training
cut (`replay_feedback`), then counts what LogEvents appends. With `serve --workers N` each
worker counts its own log and the events it receives.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl

HISTORY_EVENTS = ("impression", "click")


class LiveHistory:
    def __init__(self, per_user: int = 2000, max_users: int = 1_000_000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        self._lock = threading.Lock()
        self._events: OrderedDict[str, deque[tuple[int, str, bool]]] = OrderedDict()

    def observe(self, events: Iterable[Any]) -> None:
        """Record impression and click events (objects with user_id, item_id, event and
        ts_unix_ms; a zero timestamp means now). Other events are not histories."""
        now = int(time.time() * 1000)
        with self._lock:
            for e in events:
                if e.event not in HISTORY_EVENTS:
                    continue
                queue = self._events.get(e.user_id)
                if queue is None:
                    queue = self._events[e.user_id] = deque(maxlen=self.per_user)
                    if len(self._events) > self.max_users:
                        self._events.popitem(last=False)
                else:
                    self._events.move_to_end(e.user_id)
                queue.append((e.ts_unix_ms or now, e.item_id, e.event == "click"))

    def since(self, user_id: str, cut_ms: int) -> list[tuple[str, bool]]:
        """(item id, is a click) of the user's events strictly after `cut_ms`."""
        with self._lock:
            queue = self._events.get(user_id)
            if not queue:
                return []
            return [(item, click) for ts, item, click in queue if ts > cut_ms]


def replay_feedback(live: LiveHistory, directory: Path, since_ms: int) -> int:
    """Feed `live` the history events of an existing feedback log newer than `since_ms` (the
    oldest training cut among the served CTR models), so a restart neither forgets what was
    logged since the cut nor waits for the next training run. Reads the Parquet files and the
    WAL segments not yet converted (a segment whose Parquet file exists is counted once); call
    it before the log is opened. Returns the number of events fed."""
    from engine.feedback.parquet import decode
    from engine.feedback.records import scan
    from engine.feedback.segments import parquet_path, segments

    fed = 0
    wal = segments(directory)
    files = sorted((directory / "parquet").glob("events-*.parquet"))
    if files:
        frame = (
            pl.scan_parquet(files)
            .select("user_id", "item_id", "event", pl.col("ts").dt.epoch("ms").alias("ts"))
            .filter(pl.col("event").is_in(HISTORY_EVENTS) & (pl.col("ts") > since_ms))
            .sort("ts")
            .collect()
        )
        live.observe(
            SimpleNamespace(user_id=u, item_id=i, event=e, ts_unix_ms=t)
            for u, i, e, t in frame.iter_rows()
        )
        fed += frame.height
    for seq, path in wal.items():
        if parquet_path(directory, seq).exists():
            continue
        events = [e for e in decode(scan(path.read_bytes()).payloads) if e.ts_unix_ms > since_ms]
        live.observe(events)
        fed += sum(e.event in HISTORY_EVENTS for e in events)
    return fed
