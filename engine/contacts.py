"""Per-user contact history for campaign caps and consent, behind a small typed interface.

:class:`ContactStore` is the seam: a campaign plan asks it how often each candidate was
contacted since a time, when each last purchased, and who opted out. :class:`InProcessContacts`
answers from the feedback events this process logged (and replayed from its log at start);
a store shared by several servers (Redis, issue 16) implements the same four methods.

Events (the feedback log's): ``contact`` (a promotional contact, any campaign), ``purchase``,
``opt_out`` and ``opt_in`` (consent to promotional contact; the latest wins). Consent is
assumed until an ``opt_out``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

CONTACT_EVENTS = ("contact", "purchase", "opt_out", "opt_in")


class ContactStore(Protocol):
    def observe(self, events: Iterable[Any]) -> None:
        """Record events (objects with ``user_id``, ``event`` and ``ts_unix_ms``)."""

    def contacts_since(self, user_ids: Sequence[str], since_ms: int) -> np.ndarray:
        """int64 per user: promotional contacts at or after ``since_ms``."""

    def last_purchase_ms(self, user_ids: Sequence[str]) -> np.ndarray:
        """int64 per user: time of the last purchase (0: none known)."""

    def opted_out(self, user_ids: Sequence[str]) -> np.ndarray:
        """bool per user: has withdrawn consent to promotional contact."""


class InProcessContacts:
    """The in-process :class:`ContactStore`: per user, the times of their last ``per_user``
    contacts, their last purchase and their consent."""

    def __init__(self, per_user: int = 64) -> None:
        self.per_user = per_user
        self._lock = threading.Lock()
        self._contacts: dict[str, deque[int]] = {}
        self._purchase: dict[str, int] = {}
        self._opted_out: dict[str, int] = {}  # user -> time of their latest consent event

    def observe(self, events: Iterable[Any]) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            for e in events:
                kind = e.event
                if kind not in CONTACT_EVENTS:
                    continue
                ts = int(e.ts_unix_ms) or now
                if kind == "contact":
                    q = self._contacts.setdefault(e.user_id, deque(maxlen=self.per_user))
                    q.append(ts)
                elif kind == "purchase":
                    self._purchase[e.user_id] = max(ts, self._purchase.get(e.user_id, 0))
                else:
                    latest = self._opted_out.get(e.user_id)
                    if latest is None or abs(latest) <= ts:
                        # Sign carries the state: +ts opted out, -ts opted (back) in.
                        self._opted_out[e.user_id] = ts if kind == "opt_out" else -ts

    def forget(self, user_id: str) -> int:
        """Drop the user's contacts, purchase time and consent (erasure); entries dropped."""
        with self._lock:
            contacts = self._contacts.pop(user_id, None)
            erased = len(contacts) if contacts is not None else 0
            erased += self._purchase.pop(user_id, None) is not None
            erased += self._opted_out.pop(user_id, None) is not None
        return erased

    def contacts_since(self, user_ids: Sequence[str], since_ms: int) -> np.ndarray:
        with self._lock:
            return np.array(
                [sum(t >= since_ms for t in self._contacts.get(u, ())) for u in user_ids],
                dtype=np.int64,
            )

    def last_purchase_ms(self, user_ids: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.array([self._purchase.get(u, 0) for u in user_ids], dtype=np.int64)

    def opted_out(self, user_ids: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.array([self._opted_out.get(u, -1) > 0 for u in user_ids], dtype=np.bool_)


def replay_contacts(store: ContactStore, feedback_dir: Path) -> int:
    """Feed ``store`` the contact, purchase and consent events of a feedback log's published
    Parquet files, oldest first; returns how many. Events of WAL segments not yet converted to
    Parquet when the server starts are not replayed (they count once converted, at the next
    start)."""
    files = sorted((feedback_dir / "parquet").glob("events-*.parquet"))
    if not files:
        return 0
    frame = (
        pl.scan_parquet(files)
        .select("user_id", "event", pl.col("ts").dt.epoch("ms").alias("ts_unix_ms"))
        .filter(pl.col("event").is_in(CONTACT_EVENTS))
        .sort("ts_unix_ms")
        .collect()
    )
    store.observe(
        _Event(u, e, t) for u, e, t in frame.select("user_id", "event", "ts_unix_ms").iter_rows()
    )
    return frame.height


class _Event:
    __slots__ = ("event", "ts_unix_ms", "user_id")

    def __init__(self, user_id: str, event: str, ts_unix_ms: int) -> None:
        self.user_id, self.event, self.ts_unix_ms = user_id, event, ts_unix_ms
