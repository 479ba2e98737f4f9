"""`serve --workers N`: a forgotten user leaves every worker's feedback log, not only the log
of the worker that answered ForgetUser (each log has one writer, its own process).

The tombstone file is the broadcast: every worker's :class:`Sweeper` watches it and, when it
holds entries this worker has not swept yet, finds the forgotten users among the ids of its own
log (WAL segments and Parquet) and erases them (:meth:`FeedbackLog.erase_users`, durable), then
records durably how many entries it has swept (``privacy-swept.json`` in its log directory) and
audits the counts. A worker that was down sweeps when it starts. Idempotent: a sweep finds
nothing of users already erased. The answering worker waits (bounded) for its siblings'
records, so ForgetUser answers once every running worker's log is clean, and says how many
workers swept and how many are still pending.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path

import polars as pl

from engine.feedback.erase import event_user
from engine.feedback.files import publish
from engine.feedback.log import FeedbackLog
from engine.feedback.records import scan
from engine.feedback.segments import segments
from engine.live_history import sibling_logs
from engine.privacy.audit import append_audit
from engine.privacy.tombstones import read_digests
from kernels.forgotten import ForgottenSet

log = logging.getLogger(__name__)
MARKER = "privacy-swept.json"
# How long ForgetUser waits for the sibling workers' sweeps (their logs may be large).
SIBLING_WAIT_S = 60.0


def forgotten_in_log(feedback: FeedbackLog, forgotten: ForgottenSet) -> list[str]:
    """The ids of ``feedback``'s records (WAL, then Parquet) that ``forgotten`` holds."""
    ids: set[str] = set()
    for path in segments(feedback.directory).values():
        try:
            ids.update(event_user(p) for p in scan(path.read_bytes()).payloads)
        except FileNotFoundError:
            continue  # converted meanwhile: its Parquet file is read below
    for path in sorted(feedback.parquet_dir.glob("*.parquet")):
        column = pl.scan_parquet(path).select(pl.col("user_id").unique()).collect()["user_id"]
        ids.update(column.drop_nulls().to_list())
    return sorted(u for u in ids if u in forgotten)


def is_worker_log(directory: Path) -> bool:
    """Whether ``directory`` is a `serve --workers` worker's log (``worker-<i>``)."""
    return re.fullmatch(r"worker-\d+", Path(directory).name) is not None


def swept_entries(directory: Path) -> tuple[int, int]:
    """(tombstone entries the worker logging to ``directory`` has swept, its process id);
    (-1, 0) before its first sweep."""
    try:
        record = json.loads((directory / MARKER).read_text())
        return int(record["entries"]), int(record["pid"])
    except (FileNotFoundError, ValueError, KeyError):
        return -1, 0


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


class Sweeper:
    """Erases the tombstone set's users from one worker's feedback log (see the module doc)."""

    def __init__(
        self, feedback: FeedbackLog, tombstones: Path, audit: Path, interval_s: float = 1.0
    ) -> None:
        self.feedback = feedback
        self.tombstones = tombstones
        self.audit = audit
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._swept = -1  # the first sweep checks everything and announces this process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="privacy-sweep", daemon=True)
        self._thread.start()

    def sweep(self) -> dict[str, int]:
        """Erase the users of entries not swept yet; the counts (empty when nothing new)."""
        with self._lock:
            current = read_digests(self.tombstones)
            if len(current) <= self._swept:
                return {}
            ids = forgotten_in_log(self.feedback, current)
            erased = self.feedback.erase_users(ids) if ids else {}
            tmp = self.feedback.directory / f".{MARKER}.tmp"
            tmp.write_text(json.dumps({"entries": len(current), "pid": os.getpid()}))
            publish(tmp, self.feedback.directory / MARKER)
            self._swept = len(current)
        if ids:
            who = f"sweep:{self.feedback.directory.name}"
            append_audit(self.audit, {"action": "forget_sweep", "who": who, "erased": erased})
        return erased

    def _loop(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:
                log.exception("privacy sweep of %s failed; retrying", self.feedback.directory)
            if self._stop.wait(self.interval_s):
                return

    def wait_siblings(self, entries: int, timeout_s: float = SIBLING_WAIT_S) -> dict[str, int]:
        """Wait until every running sibling worker has swept ``entries`` tombstone entries;
        how many did and how many are pending (not running now: they sweep when they start;
        or slower than ``timeout_s``)."""
        siblings = sibling_logs(self.feedback.directory)
        deadline = time.monotonic() + timeout_s
        pending = list(siblings)
        while True:
            state = {d: swept_entries(d) for d in pending}
            pending = [d for d, (n, pid) in state.items() if n < entries]
            waiting = [d for d in pending if _running(state[d][1])]
            left = deadline - time.monotonic()
            if not waiting or left <= 0 or self._stop.wait(min(0.05, left)):
                break
        return {
            "feedback_workers_swept": len(siblings) - len(pending),
            "feedback_workers_pending": len(pending),
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
