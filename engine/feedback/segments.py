"""Naming of the log's files and crash recovery of its segments.

A log directory holds ``wal-<seq>.log`` segments (the write-ahead log), ``parquet/events-<seq>.parquet``
(sealed segments converted for the trainer) and ``corrupt/`` (bytes cut off by recovery, kept for
inspection rather than deleted).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.feedback.files import fsync_dir, fsync_file, make_dirs
from engine.feedback.records import scan

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^wal-(\d{12})\.log$")
_PARQUET = re.compile(r"^events-(\d{12})\.parquet$")


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"wal-{seq:012d}.log"


def parquet_path(directory: Path, seq: int) -> Path:
    return directory / "parquet" / f"events-{seq:012d}.parquet"


def _numbered(directory: Path, pattern: re.Pattern[str]) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    found = (pattern.match(p.name) for p in directory.iterdir())
    return {int(m.group(1)): directory / m.group(0) for m in found if m}


def segments(directory: Path) -> dict[int, Path]:
    """WAL segments by sequence number."""
    return dict(sorted(_numbered(directory, _SEGMENT).items()))


def next_sequence(directory: Path) -> int:
    """A sequence number no segment or Parquet file has used yet."""
    used = [*_numbered(directory, _SEGMENT), *_numbered(directory / "parquet", _PARQUET)]
    return max(used, default=0) + 1


@dataclass
class Recovery:
    """What opening the log found and repaired."""

    segments: int = 0
    records: int = 0
    truncated_bytes: int = 0
    # One line per segment whose tail was cut: which, where and why.
    problems: list[str] = field(default_factory=list)
    # Non-empty segments left after repair, to be converted to Parquet.
    sealed: list[int] = field(default_factory=list)


def recover(directory: Path) -> Recovery:
    """Cut every segment back to its last valid record and drop empty ones.

    After a crash only the newest segment can have a torn tail (the last, unacknowledged
    append). A bad record in an older segment is disk damage: its tail is cut too, and
    later segments are still replayed, because each one is framed independently.
    """
    result = Recovery()
    for tmp in (directory / "parquet").glob("*.tmp"):
        tmp.unlink()  # a conversion interrupted by the crash; its segment is still here
    for seq, path in segments(directory).items():
        result.segments += 1
        found = scan(path.read_bytes())
        result.records += len(found.payloads)
        if not found.clean:
            _quarantine(directory, path, found.good_bytes)
            result.truncated_bytes += found.total_bytes - found.good_bytes
            result.problems.append(f"{path.name}: {found.problem}")
            log.warning("feedback log %s: cut %s", path.name, found.problem)
        if found.good_bytes == 0:
            path.unlink()
        else:
            result.sealed.append(seq)
    fsync_dir(directory)
    return result


def _quarantine(directory: Path, path: Path, good_bytes: int) -> None:
    """Move the bytes after ``good_bytes`` into ``corrupt/`` and truncate the segment there."""
    corrupt = directory / "corrupt"
    make_dirs(corrupt)
    with path.open("r+b") as f:
        f.seek(good_bytes)
        kept = corrupt / f"{path.name}.{good_bytes}"
        kept.write_bytes(f.read())
        fsync_file(kept)  # the cut bytes are durable before the segment loses them
        fsync_dir(corrupt)
        f.truncate(good_bytes)
        f.flush()
        os.fsync(f.fileno())
