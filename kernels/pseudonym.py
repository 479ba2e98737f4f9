"""Keyed pseudonyms of user ids, computed identically by the engine (at the request boundary)
and the trainer (pseudonymising raw logs): HMAC-SHA256 of the id under a secret key, 64 hex
characters. Without the key a pseudonym can be neither inverted nor confirmed by guessing ids.
(The tombstone set's entries: :mod:`kernels.forgotten`.)
"""

from __future__ import annotations

import hmac
from pathlib import Path

PSEUDONYM_CHARS = 64


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
