"""The tombstone set's entries, computed identically by the engine (ForgetUser, every request)
and the trainer (leaving forgotten users out).

An entry is a keyed digest, ``h1-`` + HMAC-SHA256(secret, prefix + id), under a secret that
lives next to the tombstone file (``forgotten.key``: 32 random bytes, mode 0600, created once
by the first erasure: :func:`engine.privacy.tombstones.ensure_secret`). Without the secret the
set confirms no guessed id (no dictionary attack); whoever serves or trains from the set reads
the secret from the same folder.

Entries written before the secret existed are plain SHA-256 digests (64 hex characters, no
prefix): :class:`ForgottenSet` still honours them (migration), and an erasure of such a user
again replaces their plain entry with the keyed one.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KEYED_PREFIX = "h1-"
KEY_BYTES = 32
_PREFIX = b"reachrank-forgotten\0"


def key_path(forgotten: Path) -> Path:
    """The secret of the tombstone file ``forgotten`` (``<folder>/<stem>.key``)."""
    forgotten = Path(forgotten)
    return forgotten.with_name(forgotten.stem + ".key")


def read_secret(forgotten: Path) -> bytes | None:
    """The tombstone file's secret; None while no erasure has created it."""
    try:
        return key_path(forgotten).read_bytes()
    except FileNotFoundError:
        return None


def legacy_digest(user_id: str) -> str:
    """The unkeyed entry of sets written before the secret existed (SHA-256 hex)."""
    return hashlib.sha256(_PREFIX + user_id.encode()).hexdigest()


def keyed_digest(secret: bytes, user_id: str) -> str:
    """The set's entry for ``user_id`` under the set's secret."""
    return KEYED_PREFIX + hmac.digest(secret, _PREFIX + user_id.encode(), "sha256").hex()


@dataclass(frozen=True)
class ForgottenSet:
    """The entries of one tombstone file, split into keyed and legacy (unkeyed) ones."""

    keyed: frozenset[str]
    legacy: frozenset[str]
    secret: bytes | None

    @classmethod
    def of(cls, entries: Iterable[str], secret: bytes | None) -> ForgottenSet:
        keyed, legacy = set(), set()
        for entry in entries:
            (keyed if entry.startswith(KEYED_PREFIX) else legacy).add(entry)
        if keyed and secret is None:
            raise ValueError("the tombstone set has keyed entries but its secret is missing")
        return cls(frozenset(keyed), frozenset(legacy), secret)

    def __bool__(self) -> bool:
        return bool(self.keyed or self.legacy)

    def __len__(self) -> int:
        return len(self.keyed) + len(self.legacy)

    def __contains__(self, user_id: object) -> bool:
        if not isinstance(user_id, str) or not user_id:
            return False
        if self.keyed and keyed_digest(self.secret, user_id) in self.keyed:  # type: ignore[arg-type]
            return True
        return bool(self.legacy) and legacy_digest(user_id) in self.legacy

    def entries(self) -> frozenset[str]:
        return self.keyed | self.legacy
