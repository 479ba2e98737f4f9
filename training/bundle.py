"""Write versioned model bundles: ``<repo>/<model>/<version>/manifest.json`` plus artefacts.

A bundle is built in a hidden temporary directory beside its final place and renamed into
place in one step, so a reader (the engine polling the repository) never sees half a bundle.
Artefacts are ONNX, ``.npy`` (no pickle) and Parquet; the manifest is JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version directory (1 for a new model)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def write_bundle(
    repo: Path,
    name: str,
    kind: str,
    manifest: dict[str, Any],
    write_artifacts: Callable[[Path], None],
) -> Path:
    """Create the next version of ``name``: ``write_artifacts(tmpdir)`` writes the files,
    then the manifest is added and the directory renamed into place. Returns its path."""
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=model_dir))
    try:
        write_artifacts(tmp)
        version = next_version(model_dir)
        full = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version,
            "kind": kind,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **manifest,
        }
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False, default=_jsonable))
        final = model_dir / str(version)
        os.rename(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_metrics_json(directory: Path, manifest: dict[str, Any]) -> None:
    """``metrics.json`` beside a bundle's artefacts: its test (and valid) metrics and the split
    they were measured on, readable without parsing the manifest."""
    payload = {
        "model_type": manifest.get("model_type"),
        "test": manifest.get("metrics", {}),
        "valid": manifest.get("valid_metrics", {}),
        "split": manifest.get("split", {}),
    }
    (directory / "metrics.json").write_text(json.dumps(payload, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
