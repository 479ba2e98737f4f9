"""Erasing users from a feedback log's files, keeping the log's durability: every file that
held one of their events is rewritten whole (temporary file, fsync, rename, fsync the
directory), so a crash leaves either the old file or the new one, never a torn one.

:meth:`engine.feedback.log.FeedbackLog.erase_users` coordinates this with the running log
(appends, sealing, conversion); the functions here work on one file each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

import polars as pl
from reachrank.v1 import feedback_pb2

from engine.feedback.files import fsync_dir, publish
from engine.feedback.records import frame_all, scan


def event_user(payload: bytes) -> str:
    """The user id of a FeedbackEvent record."""
    return feedback_pb2.FeedbackEvent.FromString(payload).user_id


def rewrite_segment(
    path: Path, user_ids: Collection[str], user_of: Callable[[bytes], str] | None = None
) -> tuple[bool, int]:
    """Drop the records of ``user_ids`` from a WAL segment: (whether the file was replaced,
    records dropped). A torn tail goes too (recovery would cut it anyway)."""
    data = path.read_bytes()
    if not any(u.encode() in data for u in user_ids):  # cheap pre-check on the raw bytes
        return False, 0
    user_of = user_of or event_user
    found = scan(data)
    keep = [p for p in found.payloads if user_of(p) not in user_ids]
    removed = len(found.payloads) - len(keep)
    if not removed and found.clean:
        return False, 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(frame_all(keep))
    publish(tmp, path)
    return True, removed


def rewrite_parquet(path: Path, user_ids: Collection[str]) -> int:
    """Drop the rows of ``user_ids`` from one Parquet file of the log; returns the count."""
    ids = sorted(user_ids)
    hits = pl.scan_parquet(path).filter(pl.col("user_id").is_in(ids)).select(pl.len()).collect()
    removed = int(hits.item())
    if removed:
        frame = pl.read_parquet(path).filter(~pl.col("user_id").is_in(ids).fill_null(False))
        tmp = path.with_name(path.name + ".tmp")
        frame.write_parquet(tmp)
        publish(tmp, path)
    return removed


def mask_bytes(path: Path, user_ids: Collection[str]) -> int:
    """Overwrite every occurrence of the ids in a file nothing can parse (``corrupt/`` tails
    cut by recovery) with ``*``; returns the occurrences masked."""
    data = path.read_bytes()
    masked = 0
    for u in user_ids:
        needle = u.encode()
        if needle:
            masked += data.count(needle)
            data = data.replace(needle, b"*" * len(needle))
    if masked:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        publish(tmp, path)
    return masked


def mask_folder(folder: Path, user_ids: Collection[str]) -> int:
    """:func:`mask_bytes` over every file of ``folder`` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(mask_bytes(p, user_ids) for p in sorted(folder.iterdir()) if p.is_file())


def reopen_append(path: Path, old_fd: int) -> tuple[int, int]:
    """After a segment was replaced: an append descriptor on the new file and its size (the
    old descriptor, on the unlinked file, is closed)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.close(old_fd)
    fsync_dir(path.parent)
    return fd, os.fstat(fd).st_size
