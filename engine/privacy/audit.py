"""The privacy audit log: one JSON line per erasure, appended and fsynced before the RPC
answers. It records who asked (the admin principal), when, and how much was erased where;
never the user's id or data (the subject is the tombstone digest)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from engine.feedback.files import fsync_dir

_lock = threading.Lock()


def principal(context: grpc.ServicerContext) -> str:
    """Who called: the mutual-TLS identity when there is one, else a fingerprint of the
    bearer token (never the token), else the peer address."""
    auth = context.auth_context() or {}
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        names = auth.get(key)
        if names:
            return f"tls:{names[0].decode(errors='replace')}"
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            digest = hashlib.sha256(text.split(" ", 1)[-1].strip().encode()).hexdigest()
            return f"token:{digest[:12]}"
    return f"peer:{context.peer()}"


def append_audit(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record durably (O_APPEND, fsync; the directory too when the file is new)."""
    line = json.dumps({"ts_unix_ms": int(time.time() * 1000), **record}, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(path.parent)
