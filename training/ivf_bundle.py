"""The IVF index a retrieval bundle carries for large catalogues (built once, offline)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from kernels import build_ivf, save_ivf

IVF_FILES = ("centroids", "offsets", "ids", "codes", "scales")


def ivf_lists_for(n_items: int, min_items: int, n_lists: int | None) -> int:
    """Lists to build: the given number, else ~4 sqrt(n) once the catalogue reaches
    ``min_items`` (0: no index)."""
    if n_lists is not None:
        return n_lists
    return int(4 * math.sqrt(n_items)) if n_items >= min_items else 0


def write_ivf(
    directory: Path, item_embeddings: np.ndarray, n_lists: int, seed: int
) -> dict[str, Any]:
    """Build the index over the item embeddings (inner product), save it beside them and return
    the manifest entries: ``{"ivf": {...}, "artifacts": {...}}``."""
    index = build_ivf(item_embeddings, n_lists, seed, metric="ip")
    save_ivf(directory, index)
    return {
        "ivf": {"n_lists": int(index.centroids.shape[0]), "metric": "ip", "seed": seed},
        "artifacts": {f"ivf_{name}": f"ivf_{name}.npy" for name in IVF_FILES},
    }
