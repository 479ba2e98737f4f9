"""A durable, append-only log of feedback events with group commit and rotation to Parquet.

``append`` writes its records to the current segment under a lock and then waits until an
fsync has covered them. Group commit, leader-follower style: when no fsync is running, the
appender runs one itself for everything written so far; appenders that arrive meanwhile wait
and the first of them leads the next, so one fsync acknowledges many concurrent RPCs and a
lone appender pays no thread hand-off. With ``fsync_interval_ms`` > 0 a flusher thread runs
every fsync after that wait instead. The flusher also seals full, old or flushed segments,
which a converter thread turns into Parquet; a segment is deleted only once its Parquet file
is durable. Opening the log recovers from a crash (see
:func:`engine.feedback.segments.recover`) and seals what it finds.

Errors: a failed write (disk full) is undone by truncating the segment back to its last whole
record, so the log stays usable and nothing acknowledged is touched. A failed fsync leaves the
kernel's dirty pages in an unknown state (they may have been dropped), so the log refuses
further appends until it is reopened, when recovery re-reads what really is on disk.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from reachrank.v1 import feedback_pb2

from engine.errors import ResourceExhausted, Unavailable
from engine.feedback.files import fsync_dir, make_dirs
from engine.feedback.parquet import write_events_parquet
from engine.feedback.records import frame_all, scan
from engine.feedback.segments import (
    Recovery,
    next_sequence,
    parquet_path,
    recover,
    segment_path,
    segments,
)

log = logging.getLogger(__name__)
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How long after a failed rotation (no room for a new segment) the next attempt waits.
ROTATION_RETRY_S = 1.0


class LogFull(ResourceExhausted):
    """No room on disk for the events; they were not written, earlier ones are intact."""


class LogUnavailable(Unavailable):
    """The log is closed or failed; the events were not acknowledged."""


@dataclass(frozen=True)
class _Sync:
    """One fsync round: the segment to fsync and what it acknowledges."""

    fd: int
    # Appends (tickets) and flush() requests covered once the fsync succeeds.
    target: int
    wanted: int
    # The segment sealed by this round (closed after its fsync), if any.
    sealed: int | None


@dataclass(frozen=True)
class LogStats:
    appends: int
    events: int
    fsyncs: int
    sealed_segments: int
    converted_segments: int


class FeedbackLog:
    """Append-only event log in ``directory``; Parquet output under ``directory / "parquet"``.

    ``fsync_interval_ms``: 0 lets appenders lead the fsyncs themselves; more makes a flusher
    thread wait that long before each fsync to gather appenders. ``max_segment_bytes`` and
    ``max_segment_age_s`` (None: no age limit) decide when a segment is sealed for Parquet.
    One process at a time may open a directory. ``to_parquet(payloads, path)`` writes a
    sealed segment's records (the decision log, :mod:`engine.decisions`, passes its own).
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync_interval_ms: float = 0.0,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_age_s: float | None = None,
        to_parquet: Callable[[Sequence[bytes], Path], int] = write_events_parquet,
    ) -> None:
        if fsync_interval_ms < 0 or max_segment_bytes <= 0:
            raise ValueError("fsync_interval_ms must be >= 0 and max_segment_bytes > 0")
        self.directory = Path(directory)
        self.parquet_dir = self.directory / "parquet"
        make_dirs(self.parquet_dir)  # durable entries up to the first existing parent
        self._lock_file = _lock_directory(self.directory)
        self._interval = fsync_interval_ms / 1000.0
        self._max_bytes = max_segment_bytes
        self._max_age = max_segment_age_s
        self._to_parquet = to_parquet
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # wakes the flusher
        self._done = threading.Condition(self._lock)  # wakes appenders and flush()
        # Tickets: one per append; an append is acknowledged once _synced reaches its ticket.
        self._written = 0
        self._synced = 0
        # Whoever holds this runs the fsync and alone may switch or close segments.
        self._syncing = False
        self._failure: Exception | None = None
        self._closing = False
        self._closed = False
        # flush() asks for the current segment to be sealed; the flusher answers in _sealed.
        self._seal_wanted = 0
        self._sealed = 0
        # After a failed rotation, the next attempt waits until then (monotonic seconds).
        self._no_rotation_until = 0.0
        self._events = 0
        self._fsyncs = 0
        self._seal_count = 0
        self._converted = 0
        self.recovery: Recovery = recover(self.directory)
        self._seq = next_sequence(self.directory)
        self._fd, self._size, self._opened_at = self._open_segment(self._seq)
        self._convert_queue: queue.Queue[int | None] = queue.Queue()
        # Held while a segment turns into Parquet; erase_users holds it to stop that meanwhile.
        self._convert_lock = threading.Lock()
        for seq in self.recovery.sealed:
            self._convert_queue.put(seq)
        self._flusher = threading.Thread(
            target=self._flush_loop, name="feedback-fsync", daemon=True
        )
        self._converter = threading.Thread(
            target=self._convert_loop, name="feedback-parquet", daemon=True
        )
        self._flusher.start()
        self._converter.start()

    # -- appending ------------------------------------------------------------------------

    def append(self, events: Sequence[feedback_pb2.FeedbackEvent]) -> None:
        """Write ``events``; returns once they are fsynced. Raises LogFull or LogUnavailable."""
        self.append_payloads([e.SerializeToString() for e in events])

    def append_payloads(self, payloads: Sequence[bytes]) -> None:
        """``append`` for records already serialized (one per payload)."""
        if not payloads:
            return
        data = frame_all(payloads)
        with self._lock:
            self._check_usable()
            start = self._size
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                self._undo_write(start, exc)
                if exc.errno in _DISK_FULL:
                    raise LogFull(f"feedback log disk full: {exc.strerror}") from exc
                raise LogUnavailable(f"feedback log write failed: {exc}") from exc
            self._size += len(data)
            self._written += 1
            self._events += len(payloads)
            ticket = self._written
            if self._interval:
                self._work.notify()
        while True:
            with self._lock:
                while (
                    self._synced < ticket
                    and self._failure is None
                    and (self._syncing or self._interval)
                ):
                    self._done.wait()
                if self._synced >= ticket:
                    return
                if self._failure is not None:
                    raise LogUnavailable(f"feedback log fsync failed: {self._failure}")
                sync = self._claim()  # lead the next fsync, for every appender waiting
            self._sync(sync)

    def _check_usable(self) -> None:
        if self._closing or self._closed:
            raise LogUnavailable("feedback log is closed (server shutting down)")
        if self._failure is not None:
            raise LogUnavailable(
                f"feedback log failed earlier and needs a restart: {self._failure}"
            )

    def _undo_write(self, start: int, exc: OSError) -> None:
        """Cut a partly written append so the segment ends on a whole record again."""
        try:
            os.ftruncate(self._fd, start)
        except OSError as again:
            log.error("feedback log: cannot undo a failed write (%s); refusing appends", again)
            self._failure = exc
            self._done.notify_all()

    # -- the flusher ----------------------------------------------------------------------

    def _rotate_due(self) -> bool:
        if self._size == 0:
            return False
        if self._seal_wanted > self._sealed:
            return True  # flush() tries even right after a failed rotation
        now = time.monotonic()
        if now < self._no_rotation_until:
            return False
        old = self._max_age is not None and now - self._opened_at >= self._max_age
        return self._size >= self._max_bytes or old

    def _idle_timeout(self) -> float | None:
        if self._max_age is None or self._size == 0:
            return None
        now = time.monotonic()
        age_left = self._max_age - (now - self._opened_at)
        return max(0.0, age_left, self._no_rotation_until - now)

    def _pending(self) -> bool:
        return (
            self._written > self._synced or self._seal_wanted > self._sealed or self._rotate_due()
        )

    def _flush_loop(self) -> None:
        """Seal segments when due, run every fsync in interval mode, drain at close."""
        while True:
            with self._lock:
                while not (
                    self._closing
                    or self._seal_wanted > self._sealed
                    or self._rotate_due()
                    or (self._interval and self._written > self._synced)
                ):
                    self._work.wait(self._idle_timeout())
                if self._closing and (self._written == self._synced or self._failure):
                    return
                if self._failure is not None:
                    self._work.wait()
                    continue
            if self._interval:
                time.sleep(self._interval)  # let more appenders join this fsync
            with self._lock:
                while self._syncing:
                    self._done.wait()
                if not self._pending() or self._failure is not None:
                    continue
                sync = self._claim()
            self._sync(sync)

    def _claim(self) -> _Sync:
        """Take the fsync role (lock held); rotate first if the segment is due."""
        self._syncing = True
        fd = self._fd
        sealed = self._rotate() if self._rotate_due() else None
        return _Sync(fd, self._written, self._seal_wanted, sealed)

    def _sync(self, sync: _Sync) -> None:
        """Fsync what the claim covered (lock not held), then publish the result and hand the
        role back; any error fails the log rather than leaving appenders waiting."""
        error: Exception | None = None
        try:
            try:
                os.fsync(sync.fd)
            finally:
                if sync.sealed is not None:
                    os.close(sync.fd)
            if sync.sealed is not None:
                self._convert_queue.put(sync.sealed)  # before flush() sees the seal and joins
        except Exception as exc:
            log.error("feedback log fsync failed: %s; refusing appends until restart", exc)
            error = exc
        with self._lock:
            self._syncing = False
            if error is None:
                self._synced = max(self._synced, sync.target)
                self._sealed = max(self._sealed, sync.wanted)
                self._fsyncs += 1
                self._seal_count += sync.sealed is not None
            else:
                self._failure = error
            self._done.notify_all()
            self._work.notify()

    def _rotate(self) -> int | None:
        """Switch appends to a new segment; the old one's number, or None if the new one
        cannot be created (e.g. disk full): appends then go on into the old segment."""
        try:
            opened = self._open_segment(self._seq + 1)
        except OSError as exc:
            log.error("feedback log: cannot start a new segment (%s); keeping the current one", exc)
            self._no_rotation_until = time.monotonic() + ROTATION_RETRY_S
            return None
        sealed = self._seq
        self._seq += 1
        self._fd, self._size, self._opened_at = opened
        return sealed

    def _open_segment(self, seq: int) -> tuple[int, int, float]:
        """Open segment ``seq`` for appending; its directory entry is made durable first, so
        no record in it is acknowledged while the file itself could vanish in a crash."""
        path = segment_path(self.directory, seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fsync_dir(self.directory)
            return fd, os.fstat(fd).st_size, time.monotonic()
        except OSError:
            os.close(fd)
            raise

    # -- conversion to Parquet ------------------------------------------------------------

    def _convert_loop(self) -> None:
        while True:
            seq = self._convert_queue.get()
            try:
                if seq is None:
                    return
                self._convert(seq)
            except Exception:
                # The segment stays on disk, so nothing is lost; the next open converts it.
                log.exception("feedback log: converting segment %s to Parquet failed", seq)
            finally:
                self._convert_queue.task_done()

    def _convert(self, seq: int) -> None:
        with self._convert_lock:
            path = segment_path(self.directory, seq)
            found = scan(path.read_bytes())
            if found.payloads:
                rows = self._to_parquet(found.payloads, parquet_path(self.directory, seq))
                log.info("feedback log: %s -> %d Parquet rows", path.name, rows)
            path.unlink()
            fsync_dir(self.directory)
            with self._lock:
                self._converted += 1

    # -- erasure --------------------------------------------------------------------------

    def erase_users(
        self, user_ids: Sequence[str], user_of: Callable[[bytes], str] | None = None
    ) -> dict[str, int]:
        """Remove every record of ``user_ids`` from the WAL segments and the Parquet files
        (``user_id`` column), and mask them in ``corrupt/``; each file is rewritten durably
        (:mod:`engine.feedback.erase`). ``user_of`` reads a record's user id (default: a
        FeedbackEvent's). Appends wait only while the WAL is rewritten; no segment turns into
        Parquet until the end. Returns the records removed per place."""
        from engine.feedback import erase

        ids = frozenset(u for u in user_ids if u)
        with self._convert_lock:
            with self._lock:
                self._check_usable()
                while self._syncing:  # its fsync may be on the current segment's descriptor
                    self._done.wait()
                wal = 0
                for seq, path in segments(self.directory).items():
                    replaced, removed = erase.rewrite_segment(path, ids, user_of)
                    wal += removed
                    if replaced and seq == self._seq:
                        self._fd, self._size = erase.reopen_append(path, self._fd)
            parquet = sum(
                erase.rewrite_parquet(p, ids) for p in sorted(self.parquet_dir.glob("*.parquet"))
            )
            corrupt = erase.mask_folder(self.directory / "corrupt", ids)
        return {"feedback_wal": wal, "feedback_parquet": parquet, "feedback_corrupt": corrupt}

    # -- shutdown -------------------------------------------------------------------------

    def flush(self) -> None:
        """Seal the current segment and wait until every sealed segment is in Parquet."""
        with self._lock:
            if self._closed or self._failure is not None:
                return
            self._seal_wanted += 1
            wanted = self._seal_wanted
            self._work.notify()
            while self._sealed < wanted and self._failure is None:
                self._done.wait()
        self._convert_queue.join()

    def close(self) -> None:
        """Flush, stop the threads and release the directory. Later appends are refused."""
        with self._lock:
            if self._closed or self._closing:
                return
        self.flush()
        with self._lock:
            self._closing = True
            self._work.notify_all()
        self._flusher.join()
        self._convert_queue.put(None)
        self._converter.join()
        with self._lock:
            os.close(self._fd)
            if self._size == 0:
                segment_path(self.directory, self._seq).unlink(missing_ok=True)
            self._closed = True
        self._lock_file.close()

    def stats(self) -> LogStats:
        with self._lock:
            return LogStats(
                self._written, self._events, self._fsyncs, self._seal_count, self._converted
            )

    def __enter__(self) -> FeedbackLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _lock_directory(directory: Path) -> TextIO:
    """Refuse a second process writing the same log (the lock dies with its process)."""
    f = (directory / "LOCK").open("a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise LogUnavailable(f"{directory} is in use by another feedback log") from None
    return f
