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
from typing import TypeVar

from engine.errors import BundleError
from kernels.bundle_manifest import MANIFEST_FILE, ONNX_KINDS, Manifest, ManifestError
from kernels.bundle_manifest import parse_manifest as _parse

MANIFEST = MANIFEST_FILE
M = TypeVar("M")


@dataclass(frozen=True)
class BundleRef:
    """A version of a model on disk and its typed manifest (None: a Triton-layout model, whose
    configuration is its config.pbtxt)."""

    name: str
    version: int
    path: Path
    manifest: Manifest | None

    @property
    def kind(self) -> str:
        return self.manifest.kind if self.manifest is not None else ""

    def bundle(self, kind: type[M]) -> M:
        """The manifest as the given kind's contract (a model class reads its own through this)."""
        if not isinstance(self.manifest, kind):
            raise BundleError(f"{self.name}/{self.version}: not a {kind.__name__} bundle")
        return self.manifest

    def file(self, key: str) -> Path:
        """Path of an artefact named in the manifest, refusing paths that leave the bundle."""
        m = self.manifest
        if m is None:
            raise BundleError(f"{self.name}/{self.version}: no manifest")
        onnx = getattr(m, "onnx", None)
        if key == "onnx" and onnx is not None:
            rel = onnx.file
        elif key in m.artifacts:
            rel = m.artifacts[key]
        else:
            raise BundleError(f"{self.name}/{self.version}: the manifest names no {key!r} file")
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
    where = f"{name}/{version}"
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: unreadable manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{where}: manifest is not a JSON object")
    try:
        manifest = _parse(data)
    except ManifestError as exc:
        raise BundleError(f"{path / MANIFEST}: {exc}") from None
    ref = BundleRef(name=name, version=version, path=path, manifest=manifest)
    validate_manifest(ref)
    return ref


def validate_manifest(ref: BundleRef) -> None:
    """Checks beyond the contract's schema (the version, the files); raises BundleError naming
    what is wrong."""
    m = ref.manifest
    where = f"{ref.name}/{ref.version}"
    if m is None:
        raise BundleError(f"{where}: no manifest")
    if m.version != ref.version:
        raise BundleError(f"{where}: manifest says version {m.version}")
    files = list(m.artifacts)
    if m.kind in ONNX_KINDS:
        files.insert(0, "onnx")
    for key in files:
        path = ref.file(key)
        if not path.is_file():
            raise BundleError(f"{where}: missing artefact {path.name}")
