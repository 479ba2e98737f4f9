"""Write versioned model bundles: ``<repo>/<model>/<version>/manifest.json`` plus artefacts.

A bundle is built in a hidden temporary directory beside its final place and renamed into
place in one step, so a reader (the engine polling the repository) never sees half a bundle.
Artefacts are ONNX, ``.npy`` (no pickle) and Parquet; the manifest is JSON, written through
the typed bundle contract the engine reads (:mod:`kernels.bundle_manifest`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kernels.bundle_manifest import MANIFEST_FILE, BundleManifest, jsonable, manifest_json


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version directory (1 for a new model)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def write_bundle(
    repo: Path, name: str, manifest: BundleManifest, write_artifacts: Callable[[Path], None]
) -> Path:
    """Create the next version of ``name``: ``write_artifacts(tmpdir)`` writes the files (and
    may fill in the manifest, e.g. its parity error), then the manifest, stamped with name,
    version and time and checked against the contract, is added and the directory renamed
    into place. Returns its path."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        write_artifacts(tmp)
        version = next_version(model_dir)
        (tmp / MANIFEST_FILE).write_text(manifest_json(manifest.stamped(name, version)))
        final = model_dir / str(version)
        os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_metrics_json(directory: Path, manifest: BundleManifest) -> None:
    """``metrics.json`` beside a bundle's artefacts: its test (and valid) metrics and the split
    they were measured on, readable without parsing the manifest."""
    payload = {
        "model_type": manifest.model_type,
        "test": manifest.metrics,
        "valid": manifest.valid_metrics,
        "split": manifest.split or {},
    }
    (directory / "metrics.json").write_text(json.dumps(payload, indent=2, default=jsonable))
