"""Live user histories: the impressions and clicks this server logged (LogEvents), so the CTR
models' history features move with the user instead of staying at the training cut.

A CTR bundle ships each user's history as of the end of its training log (`history.as_of_ms`
in the manifest). `LiveHistory` keeps the events logged here since the process started, newest
first out when a user exceeds `per_user` or the store exceeds `max_users` (least recently
active user dropped); `LiveFields` (one per CTR model) adds the ones newer than its bundle's
cut to the snapshot counts and re-derives the features with the trainer's own definitions
(`kernels.featurize.history_values`, the schema's transforms).

`LiveHistory` is the embedded (one process) backing of `engine.state.HistoryStore`; with
`serve --state-store redis://...` every replica reads and writes the same histories
(`engine.state.redis_store`) and the models get that store instead, through the same
`observe` / `since`. At start the server replays its feedback log since the oldest training
cut (`replay_feedback`; with `serve --workers N`, the other workers' published Parquet too),
then counts what its own LogEvents appends: embedded, between restarts a worker does not see
the events the other workers receive.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl

from engine.feature_store import EmbeddedFeatureStore
from kernels.bundle_manifest import History
from kernels.featurize import (
    HISTORY_STATS,
    FeatureSchema,
    NumericField,
    history_field_name,
    history_values,
)

HISTORY_EVENTS = ("impression", "click")


class LiveHistory:
    def __init__(self, per_user: int = 2000, max_users: int = 1_000_000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        self._lock = threading.Lock()
        self._events: OrderedDict[str, deque[tuple[int, str, bool]]] = OrderedDict()
        # Per-user reads answered (`since` calls): privacy tests prove a request read none.
        self.reads = 0

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
            self.reads += 1
            queue = self._events.get(user_id)
            if not queue:
                return []
            return [(item, click) for ts, item, click in queue if ts > cut_ms]

    def forget(self, user_id: str) -> int:
        """Drop the user's events (erasure); returns how many there were."""
        with self._lock:
            queue = self._events.pop(user_id, None)
        return len(queue) if queue is not None else 0


class LiveFields:
    """Where a bundle's history features sit in ``num``, the snapshot counts behind them, and
    how to re-derive them from counts (`kernels.featurize.history_values` + the schema)."""

    def __init__(
        self,
        schema: FeatureSchema,
        spec: History,
        store: EmbeddedFeatureStore,
        users: pl.DataFrame,
        items: pl.DataFrame,
        user_item: Mapping[str, pl.DataFrame],
    ) -> None:
        """``users``, ``items``, ``user_item``: the tables ``store`` was built from (its id ->
        row maps index them)."""
        self.schema = schema
        # No cut recorded: nothing is newer.
        self.as_of_ms = spec.as_of_ms if spec.as_of_ms is not None else 2**62
        self.prior, self.strength = spec.prior, spec.strength
        # Attributes the model has user x attribute fields (and so a shipped table) for.
        self.by: list[str] = [b for b in spec.by if b in user_item]
        index = {f.name: j for j, f in enumerate(schema.numeric)}
        # prefix -> [(column in num, field, statistic)]
        self.fields: dict[str, list[tuple[int, NumericField, str]]] = {}
        for prefix in ["user", *(f"user_{b}" for b in self.by)]:
            for stat in HISTORY_STATS:
                name = history_field_name(prefix, stat)
                if name in index:
                    self.fields.setdefault(prefix, []).append(
                        (index[name], schema.numeric[index[name]], stat)
                    )
        self.user_row, self.item_row = store.user_row, store.item_row
        # Snapshot counts by the store's user rows; per (user, value) for the cross tables.
        self.user_counts = _count_columns(users, "user")
        self.pair_counts = {b: _counts(user_item[b], b) for b in self.by}
        # Per store item row (and a last None for row -1, an unknown item): the attribute value.
        self.row_values = {b: np.array([*_strings(items, b), None], dtype=object) for b in self.by}

    def _encode(
        self, prefix: str, imp: np.ndarray, clk: np.ndarray
    ) -> list[tuple[int, np.ndarray]]:
        values = history_values(imp, clk, self.prior, self.strength)
        return [
            (j, self.schema.encode_numeric(f, np.asarray(values[stat], dtype=np.float64)))
            for j, f, stat in self.fields.get(prefix, [])
        ]

    def apply(
        self,
        num: np.ndarray,
        user_id: str,
        item_rows: np.ndarray,
        fresh: list[tuple[str, bool]],
        attributes: Mapping[str, Sequence[str | None]],
    ) -> None:
        """Overwrite the history columns of ``num`` with snapshot + fresh counts."""
        clicks = sum(c for _, c in fresh)
        row = self.user_row.get(user_id)
        imp0, clk0 = (0.0, 0.0) if row is None else self.user_counts[row]
        imp, clk = np.array([imp0 + len(fresh) - clicks]), np.array([clk0 + clicks])
        for j, encoded in self._encode("user", imp, clk):
            num[:, j] = encoded[0]
        for b in self.by:
            delta: dict[str, list[int]] = {}
            for item, click in fresh:
                value = self.row_values[b][self.item_row.get(item, -1)]
                if value is not None:
                    d = delta.setdefault(value, [0, 0])
                    d[1 if click else 0] += 1
            if not delta:
                continue
            values = self.row_values[b][np.where(item_rows < 0, -1, item_rows)]
            given = attributes.get(b)
            if given:
                override = np.array(given, dtype=object)
                values = np.where(override != None, override, values)  # noqa: E711 - elementwise
            # One derivation for every value with new events, then scattered to its rows.
            names = list(delta)
            pairs = self.pair_counts[b]
            base = [pairs.get((user_id, v), (0.0, 0.0)) for v in names]
            imp = np.array([c[0] + delta[v][0] for c, v in zip(base, names, strict=True)])
            clk = np.array([c[1] + delta[v][1] for c, v in zip(base, names, strict=True)])
            code = {v: k for k, v in enumerate(names)}
            which = np.fromiter((code.get(v, -1) for v in values), np.int64, len(values))
            rows = np.flatnonzero(which >= 0)
            for j, column in self._encode(f"user_{b}", imp, clk):
                num[rows, j] = column[which[rows]]


def _count_columns(frame: pl.DataFrame, prefix: str) -> np.ndarray:
    """[rows, 2] impressions and clicks of a shipped history table (zeros without them)."""
    names = [history_field_name(prefix, "impressions"), history_field_name(prefix, "clicks")]
    if not all(n in frame.columns for n in names):
        return np.zeros((frame.height, 2))
    return frame.select(pl.col(n).cast(pl.Float64).fill_null(0) for n in names).to_numpy()


def _counts(frame: pl.DataFrame, by: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(user id, attribute value) -> (impressions, clicks) of a user x attribute table."""
    counts = _count_columns(frame, f"user_{by}")
    keys = zip(
        frame["user_id"].cast(pl.String).to_list(),
        frame[by].cast(pl.String).to_list(),
        strict=True,
    )
    return {k: (float(c[0]), float(c[1])) for k, c in zip(keys, counts, strict=True)}


def _strings(frame: pl.DataFrame, column: str) -> list[str | None]:
    if column not in frame.columns:
        return [None] * frame.height
    return frame[column].cast(pl.String).to_list()


def replay_feedback(live: LiveHistory, directory: Path, since_ms: int, wal: bool = True) -> int:
    """Feed `live` the history events of an existing feedback log newer than `since_ms` (the
    oldest training cut among the served CTR models), so a restart neither forgets what was
    logged since the cut nor waits for the next training run. Reads the Parquet files and, with
    `wal`, the WAL segments not yet converted (a segment whose Parquet file exists is counted
    once): call it so before the log is opened. A log another process is writing must be read
    with `wal=False` (its published Parquet files never change; its WAL may be mid-conversion).
    Returns the number of events fed."""
    from engine.feedback.parquet import decode
    from engine.feedback.records import scan
    from engine.feedback.segments import parquet_path, segments

    fed = 0
    segments_left = segments(directory) if wal else {}
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
    for seq, path in segments_left.items():
        if parquet_path(directory, seq).exists():
            continue
        events = [e for e in decode(scan(path.read_bytes()).payloads) if e.ts_unix_ms > since_ms]
        live.observe(events)
        fed += sum(e.event in HISTORY_EVENTS for e in events)
    return fed


def sibling_logs(directory: Path) -> list[Path]:
    """The other workers' feedback logs beside a `serve --workers` worker's own
    (`<feedback-dir>/worker-<i>`); [] for a single process's log."""
    if not re.fullmatch(r"worker-\d+", directory.name):
        return []
    return sorted(
        p
        for p in directory.parent.iterdir()
        if p != directory and p.is_dir() and re.fullmatch(r"worker-\d+", p.name)
    )
