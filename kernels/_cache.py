"""Point Numba's on-disk cache at a folder keyed by the kernels' source, before any kernel loads.

Numba invalidates a cached kernel only when its own file changes, not when a helper it inlined
from another file does (e.g. `_heap.sift_down`): after an upgrade it would load stale machine
code. Keying the folder by a digest of every kernels/*.py makes any source change a fresh cache.
Applies only when NUMBA_CACHE_DIR is set (the Makefile and the engine's settings set it).
"""

import hashlib
from pathlib import Path

from numba.core import config


def source_digest(folder: Path = Path(__file__).parent) -> str:
    """Short digest of the Python sources in `folder` (the kernels package by default)."""
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def key_cache_dir() -> str | None:
    """Move config.CACHE_DIR to `<NUMBA_CACHE_DIR>/kernels-<digest>`; returns the folder used."""
    if not config.CACHE_DIR:
        return None
    base = Path(config.CACHE_DIR)
    if not base.name.startswith("kernels-"):
        config.CACHE_DIR = str(base / f"kernels-{source_digest()}")
    return config.CACHE_DIR


CACHE_DIR = key_cache_dir()
