"""Framing of write-ahead-log records: ``length | crc32 | payload``, and scanning a segment.

The CRC covers the length field as well as the payload, so a zero-filled tail (which a crash
can leave behind on some filesystems) never passes as a record.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

HEADER = struct.Struct("<II")
# One record holds one serialized event; anything larger is corruption, not data.
MAX_PAYLOAD = 16 * 1024 * 1024


def _crc(length: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(length))


def frame(payload: bytes) -> bytes:
    """One record: little-endian length and CRC32, then the payload."""
    if not 0 < len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"record payload must be 1..{MAX_PAYLOAD} bytes, got {len(payload)}")
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", _crc(length, payload)) + payload


def frame_all(payloads: Iterable[bytes]) -> bytes:
    return b"".join(map(frame, payloads))


@dataclass(frozen=True)
class Scan:
    """The records of a segment up to the first bad one."""

    payloads: list[bytes]
    # Bytes of the segment that hold complete, valid records; the rest is a torn or corrupt tail.
    good_bytes: int
    total_bytes: int
    # Why scanning stopped before the end ("" when the whole segment is valid).
    problem: str

    @property
    def clean(self) -> bool:
        return self.good_bytes == self.total_bytes


def _records(data: bytes) -> Iterator[tuple[int, bytes | str]]:
    """(end offset, payload) per valid record; a final (offset, reason) if one is bad."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            yield offset, "partial header"
            return
        length, crc = HEADER.unpack_from(data, offset)
        if not 0 < length <= MAX_PAYLOAD:
            yield offset, f"bad length {length}"
            return
        start = offset + HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            yield offset, "partial payload"
            return
        if _crc(data[offset : offset + 4], payload) != crc:
            yield offset, "CRC mismatch"
            return
        offset = start + length
        yield offset, payload


def scan(data: bytes) -> Scan:
    """Split a segment's bytes into valid records and the offset where they stop."""
    payloads: list[bytes] = []
    good = 0
    for offset, item in _records(data):
        if isinstance(item, str):
            return Scan(payloads, good, len(data), f"{item} at byte {offset}")
        payloads.append(item)
        good = offset
    return Scan(payloads, good, len(data), "")
