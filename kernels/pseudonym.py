"""Keyed pseudonyms and erasure digests of user ids, computed identically by the engine (at
the request boundary, in the tombstone set) and the trainer (pseudonymising raw logs, excluding
forgotten users).

- :func:`pseudonym`: HMAC-SHA256 of the id under a secret key, 64 hex characters. Without the
  key a pseudonym can be neither inverted nor confirmed by guessing ids.
- :func:`forgotten_digest`: the SHA-256 of an id as stored in the tombstone set, so the set
  itself never holds an id. Unkeyed: whoever already knows an id can check whether it was
  forgotten (the trainer and every replica must compute it without sharing a secret); with
  pseudonymous ids at rest the id hashed here is already the keyed pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

PSEUDONYM_CHARS = 64
_FORGOTTEN_PREFIX = b"reachrank-forgotten\0"


def read_key(path: Path) -> bytes:
    """The secret of a key file (surrounding whitespace stripped); at least 16 bytes."""
    key = Path(path).read_bytes().strip()
    if len(key) < 16:
        raise ValueError(f"{path}: a pseudonym key needs at least 16 bytes, found {len(key)}")
    return key


def pseudonym(key: bytes, user_id: str) -> str:
    """HMAC-SHA256(key, user_id) as lowercase hex (the empty id stays empty: anonymous)."""
    if not user_id:
        return ""
    return hmac.digest(key, user_id.encode(), "sha256").hex()


def forgotten_digest(user_id: str) -> str:
    """The tombstone set's entry for ``user_id`` (lowercase hex SHA-256)."""
    return hashlib.sha256(_FORGOTTEN_PREFIX + user_id.encode()).hexdigest()
