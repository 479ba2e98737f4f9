"""The persisted set of forgotten users (keyed digests only, see :mod:`kernels.forgotten`: the
secret is ``forgotten.key`` beside the set, 0600, made by the first erasure) that every request
checks: a forgotten user is served as a new user and their new events are never logged with
their id. Plain SHA-256 entries of older sets are still honoured, and replaced by keyed ones
when the user is forgotten again.

The set is one Parquet file, ``user_digest`` (String), rewritten whole on each addition (write a
temporary file, fsync, rename, fsync the directory), so a crash leaves the old set or the new one.
Other processes serving the same file (``serve --workers``, replicas on a shared volume) adopt
an addition within ``refresh_s``: a request costs one clock read, and one HMAC-SHA256 of its
user id only while the set is not empty (plus one SHA-256 while it holds unkeyed entries).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import polars as pl

from engine.feedback.files import fsync_dir, publish
from kernels.forgotten import (
    KEY_BYTES,
    ForgottenSet,
    key_path,
    keyed_digest,
    legacy_digest,
    read_secret,
)

COLUMN = "user_digest"


def read_digests(path: Path) -> ForgottenSet:
    """The entries of a tombstone file (empty when it does not exist yet)."""
    if not path.exists():
        return ForgottenSet(frozenset(), frozenset(), read_secret(path))
    entries = pl.read_parquet(path, columns=[COLUMN])[COLUMN].to_list()
    return ForgottenSet.of(entries, read_secret(path))


def ensure_secret(forgotten: Path) -> bytes:
    """The tombstone file's secret, created durably (0600) when there is none yet. Safe across
    processes: the new secret is written whole to a private file and linked into place, so
    the first creator wins and every other process reads the winner's."""
    path = key_path(forgotten)
    found = read_secret(forgotten)
    if found is not None:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails when another process linked its secret first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return path.read_bytes()


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
        return bool(digests) and user_id in digests

    def digest(self, user_id: str) -> str:
        """``user_id``'s keyed entry (what the audit log and masked rows may name), making the
        set's secret if there is none yet."""
        return keyed_digest(ensure_secret(self.path), user_id)

    def add(self, user_id: str) -> bool:
        """Persist ``user_id``'s tombstone; False when it was there already (an unkeyed entry
        of an older set is replaced by the keyed one)."""
        digest = self.digest(user_id)
        old = legacy_digest(user_id)
        with self._lock:
            current = read_digests(self.path)  # another process may have added one meanwhile
            if digest in current.keyed and old not in current.legacy:
                self._digests = current
                return False
            added = user_id not in current
            entries = (current.entries() - {old}) | {digest}
            write_digests(self.path, entries)
            self._digests = ForgottenSet.of(entries, current.secret or read_secret(self.path))
            self._stamp = self._file_stamp()
            return added

    def mask(self, user_ids: list[str]) -> list[bool]:
        """Per id, whether it was forgotten (one digest per id, only when the set is not
        empty)."""
        self._maybe_refresh()
        digests = self._digests
        if not digests:
            return [False] * len(user_ids)
        return [u in digests for u in user_ids]
