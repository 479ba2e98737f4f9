"""The model repository on disk: discover versions, read and validate manifests.

Layout: ``<repo>/<model>/<version>/manifest.json`` plus the artefacts it names, or Triton's
``<repo>/<model>/config.pbtxt`` with ``<repo>/<model>/<version>/model.onnx``
(engine.triton_config); both kinds live side by side. Versions are positive integers;
directories starting with ``.`` are bundles still being written.
Nothing is unpickled: artefacts are ONNX, ``.npy`` (allow_pickle=False), Parquet and JSON.
Nothing is read outside the repository: a model name is one directory name, and neither a
version directory nor an artefact may lead out of it (``..``, absolute paths, symlinks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BundleError

MANIFEST = "manifest.json"
KINDS = ("ctr", "retrieval", "profiles", "uplift")
# Kinds whose bundle carries an ONNX graph.
ONNX_KINDS = ("ctr", "retrieval", "uplift")
_REQUIRED = ("format_version", "name", "version", "kind", "artifacts")


@dataclass(frozen=True)
class BundleRef:
    """A version of a model on disk and its parsed manifest."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    def file(self, key: str) -> Path:
        """Path of an artefact named in the manifest, refusing paths that leave the bundle."""
        rel = self.manifest["artifacts"][key] if key != "onnx" else self.manifest["onnx"]["file"]
        path = (self.path / rel).resolve()
        if self.path.resolve() not in path.parents:
            raise BundleError(f"{self.name}/{self.version}: artefact {rel!r} escapes the bundle")
        return path


def is_model_name(name: str) -> bool:
    """Whether ``name`` is one directory name (model names arrive in RPCs: no paths)."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def model_names(repo: Path) -> list[str]:
    """Models in the repository (directories holding at least one version)."""
    if not repo.is_dir():
        return []
    return sorted(p.name for p in repo.iterdir() if p.is_dir() and versions(repo, p.name))


def _version_dirs(model_dir: Path) -> list[Path]:
    return [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]


def is_triton_model(model_dir: Path) -> bool:
    """A Triton-layout model: it has a config.pbtxt, or ONNX versions and no manifest."""
    from engine.triton_config import CONFIG, DEFAULT_MODEL_FILENAME

    if (model_dir / CONFIG).is_file():
        return True
    dirs = _version_dirs(model_dir) if model_dir.is_dir() else []
    return not any((p / MANIFEST).is_file() for p in dirs) and any(
        (p / DEFAULT_MODEL_FILENAME).is_file() for p in dirs
    )


def versions(repo: Path, name: str) -> list[int]:
    """Complete versions of a model, ascending."""
    if not is_model_name(name):
        return []
    model_dir = repo / name
    if not model_dir.is_dir():
        return []
    marker = MANIFEST
    if is_triton_model(model_dir):
        from engine.triton_config import safe_model_filename

        marker = safe_model_filename(model_dir)
    return sorted(int(p.name) for p in _version_dirs(model_dir) if (p / marker).is_file())


def read_model(repo: Path, name: str, version: int | None = None) -> BundleRef:
    """The given version (default: latest, or what a Triton version policy serves) of any
    model of the repository: a ReachRank bundle or a Triton-layout model."""
    model_dir = repo / name
    if is_model_name(name) and is_triton_model(model_dir):
        from engine.triton_config import read_triton

        if repo.resolve() not in model_dir.resolve().parents:
            raise BundleError(f"{name}: the model directory leads out of {repo}")
        available = versions(repo, name)
        if not available:
            raise BundleError(f"model {name!r} has no versions in {repo}")
        return read_triton(model_dir, name, version, available)
    return read_bundle(repo, name, version)


def read_bundle(repo: Path, name: str, version: int | None = None) -> BundleRef:
    """The given version (default: latest) of a model, with its manifest checked."""
    available = versions(repo, name)
    if not available:
        raise BundleError(f"model {name!r} has no versions in {repo}")
    if version is None:
        version = available[-1]
    elif version not in available:
        raise BundleError(f"model {name!r} has no version {version} (has {available})")
    path = repo / name / str(version)
    if repo.resolve() not in path.resolve().parents:
        raise BundleError(f"{name}/{version}: the version directory leads out of {repo}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{name}/{version}: unreadable manifest: {exc}") from exc
    ref = BundleRef(name=name, version=version, path=path, manifest=manifest)
    validate_manifest(ref)
    return ref


def validate_manifest(ref: BundleRef) -> None:
    """Schema and file checks; raises BundleError naming what is wrong."""
    m = ref.manifest
    where = f"{ref.name}/{ref.version}"
    if not isinstance(m, dict):
        raise BundleError(f"{where}: manifest is not a JSON object")
    missing = [k for k in _REQUIRED if k not in m]
    if missing:
        raise BundleError(f"{where}: manifest lacks {missing}")
    if m["kind"] not in KINDS:
        raise BundleError(f"{where}: unknown kind {m['kind']!r} (expected one of {KINDS})")
    if int(m["version"]) != ref.version:
        raise BundleError(f"{where}: manifest says version {m['version']}")
    if not isinstance(m["artifacts"], dict):
        raise BundleError(f"{where}: manifest 'artifacts' must map names to files")
    files = list(m["artifacts"])
    if m["kind"] in ONNX_KINDS:
        onnx_spec = m.get("onnx")
        if not isinstance(onnx_spec, dict) or not {"file", "inputs", "outputs"} <= set(onnx_spec):
            raise BundleError(f"{where}: manifest 'onnx' needs file, inputs and outputs")
        files.insert(0, "onnx")
    for key in files:
        path = ref.file(key)
        if not path.is_file():
            raise BundleError(f"{where}: missing artefact {path.name}")
