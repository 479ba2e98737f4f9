"""The persisted set of forgotten users (digests only, see :func:`kernels.pseudonym.forgotten_digest`)
that every request checks: a forgotten user is served as a new user and their new events are
never logged with their id.

The set is one Parquet file, ``user_digest`` (String), rewritten whole on each addition (write a
temporary file, fsync, rename, fsync the directory), so a crash leaves the old set or the new one.
Other processes serving the same file (``serve --workers``, replicas on a shared volume) adopt
an addition within ``refresh_s``: a request costs one clock read, and one SHA-256 of its user id
only while the set is not empty.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl

from engine.feedback.files import publish
from kernels.pseudonym import forgotten_digest

COLUMN = "user_digest"


def read_digests(path: Path) -> frozenset[str]:
    """The digests of a tombstone file (empty when it does not exist yet)."""
    if not path.exists():
        return frozenset()
    return frozenset(pl.read_parquet(path, columns=[COLUMN])[COLUMN].to_list())


def write_digests(path: Path, digests: frozenset[str]) -> None:
    """Replace the tombstone file durably and atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pl.DataFrame({COLUMN: sorted(digests)}, schema={COLUMN: pl.String}).write_parquet(tmp)
    publish(tmp, path)


class Tombstones:
    """Membership test for forgotten users over a tombstone file."""

    def __init__(self, path: Path, refresh_s: float = 1.0) -> None:
        self.path = Path(path)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._digests = read_digests(self.path)
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + refresh_s

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.refresh_s
        stamp = self._file_stamp()
        if stamp != self._stamp:
            with self._lock:
                self._digests, self._stamp = read_digests(self.path), stamp

    def __len__(self) -> int:
        self._maybe_refresh()
        return len(self._digests)

    def contains(self, user_id: str) -> bool:
        """Whether ``user_id`` (as the engine keys it: raw or pseudonymised) was forgotten."""
        if time.monotonic() >= self._next_check:
            self._maybe_refresh()
        digests = self._digests
        return bool(digests) and bool(user_id) and forgotten_digest(user_id) in digests

    def add(self, user_id: str) -> bool:
        """Persist ``user_id``'s tombstone; False when it was there already."""
        digest = forgotten_digest(user_id)
        with self._lock:
            current = read_digests(self.path)  # another process may have added one meanwhile
            if digest in current:
                self._digests = current
                return False
            updated = current | {digest}
            write_digests(self.path, updated)
            self._digests, self._stamp = updated, self._file_stamp()
            return True

    def mask(self, user_ids: list[str]) -> list[bool]:
        """Per id, whether it was forgotten (one digest per id, only when the set is not
        empty)."""
        self._maybe_refresh()
        digests = self._digests
        if not digests:
            return [False] * len(user_ids)
        return [forgotten_digest(u) in digests for u in user_ids]
