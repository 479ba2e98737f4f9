"""Bundle validation: a bad bundle is refused with a reason and the serving one stays."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BundleError
from engine.registry import ModelRegistry
from engine.repository import is_model_name, read_bundle, versions
from engine.settings import Settings


@pytest.fixture
def repo(tmp_path: Path, trained_repo: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(trained_repo, copy)
    return copy


def _new_version(repo: Path, name: str) -> Path:
    src = repo / name / "1"
    dst = repo / name / "2"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = 2
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: (b / "model.onnx").write_bytes(b"not an onnx file"), "ONNX"),
        (lambda b: (b / "items.parquet").unlink(), "missing artefact items.parquet"),
        (lambda b: (b / "manifest.json").write_text("{"), "unreadable manifest"),
        (lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:200]), "ONNX"),
    ],
)
def test_corrupt_ctr_version_is_refused_and_old_keeps_serving(
    repo: Path, damage, reason: str
) -> None:
    registry = ModelRegistry(Settings(repo=repo))
    assert registry.load_all() == []
    serving = registry.get("ctr")
    damage(_new_version(repo, "ctr"))
    with pytest.raises(BundleError, match=reason):
        registry.load("ctr")
    assert registry.get("ctr") is serving
    assert registry.events[-1].ok is False and reason.split()[0] in registry.events[-1].reason


def test_manifest_signature_mismatch_is_refused(repo: Path) -> None:
    bundle = _new_version(repo, "retrieval")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["onnx"]["inputs"][0]["name"] = "user"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="do not match the manifest"):
        ModelRegistry(Settings(repo=repo)).load("retrieval")


def test_artefact_paths_cannot_escape_the_bundle(repo: Path) -> None:
    bundle = _new_version(repo, "ctr")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"]["items"] = "../../../etc/passwd"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="escapes"):
        read_bundle(repo, "ctr", 2)


def test_artefact_symlinked_out_of_the_bundle_is_refused(repo: Path, tmp_path: Path) -> None:
    bundle = _new_version(repo, "ctr")
    outside = tmp_path / "outside.parquet"
    shutil.copy(bundle / "items.parquet", outside)
    (bundle / "items.parquet").unlink()
    (bundle / "items.parquet").symlink_to(outside)
    with pytest.raises(BundleError, match="escapes"):
        read_bundle(repo, "ctr", 2)
    # A link that stays inside the bundle is fine.
    (bundle / "items.parquet").unlink()
    shutil.copy(outside, bundle / "items-data.parquet")
    (bundle / "items.parquet").symlink_to("items-data.parquet")
    assert read_bundle(repo, "ctr", 2).file("items") == (bundle / "items-data.parquet").resolve()


def test_version_directory_symlinked_out_of_the_repository_is_refused(
    repo: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(repo / "ctr" / "1", outside)
    manifest = json.loads((outside / "manifest.json").read_text())
    manifest["version"] = 2
    (outside / "manifest.json").write_text(json.dumps(manifest))
    (repo / "ctr" / "2").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BundleError, match="leads out of"):
        read_bundle(repo, "ctr", 2)


@pytest.mark.parametrize("name", ["..", ".", "", "../repo/ctr", "ctr/1", "/etc", "a\\b", "c\0"])
def test_model_names_are_single_directory_names(repo: Path, tmp_path: Path, name: str) -> None:
    assert not is_model_name(name)
    assert versions(repo, name) == []
    with pytest.raises(BundleError):
        read_bundle(repo, name)


def test_a_path_as_model_name_reaches_nothing_outside(repo: Path, tmp_path: Path) -> None:
    # Before names were checked, ``repo / "/abs/dir"`` was ``/abs/dir``: Load could read any
    # bundle on disk.
    outside = tmp_path / "other"
    shutil.copytree(repo / "ctr", outside / "ctr")
    for name in (str(outside / "ctr"), "../other/ctr"):
        assert versions(repo, name) == []
        with pytest.raises(BundleError, match="has no versions"):
            read_bundle(repo, name)
    assert is_model_name("ctr-dcn") and versions(repo, "ctr") == [1]


def test_incomplete_versions_are_invisible(repo: Path) -> None:
    (repo / "ctr" / ".incoming-x").mkdir()
    (repo / "ctr" / "7").mkdir()  # no manifest yet
    assert versions(repo, "ctr") == [1]


class _Planted:
    """Unpickling this runs code: it touches a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("artefact", ["consumed_indices.npy", "popularity.npy"])
def test_pickled_artefacts_are_refused_unopened(repo: Path, tmp_path: Path, artefact: str) -> None:
    """No pickle on the load path: an object array (a pickle) in a bundle is refused and the
    code it carries never runs."""
    registry = ModelRegistry(Settings(repo=repo))
    assert registry.load_all() == []
    serving = registry.get("retrieval")
    marker = tmp_path / "pwned"
    bundle = _new_version(repo, "retrieval")
    np.save(bundle / artefact, np.array([_Planted(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(BundleError, match="pickle"):
        registry.load("retrieval")
    assert not marker.exists()
    assert registry.get("retrieval") is serving
