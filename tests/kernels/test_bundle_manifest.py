"""The bundle contract (kernels.bundle_manifest): what the trainer writes is what the engine
reads, faults are named by field, and the kinds are declared once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import repository
from engine.kserve import servicer as kserve_servicer
from engine.registry import MODEL_KINDS
from kernels.bundle_manifest import (
    KINDS,
    MANIFEST_FILE,
    ONNX_KINDS,
    CTRBundle,
    Graph,
    ManifestError,
    ProfilesBundle,
    RetrievalBundle,
    Tensor,
    manifest_json,
    parse_manifest,
)


def _ctr() -> CTRBundle:
    return CTRBundle(
        model_type="lr",
        onnx=Graph(
            inputs=[Tensor(name="cat", dtype="int64", shape=[-1, 2])],
            outputs=[Tensor(name="pctr", dtype="float32", shape=[-1])],
        ),
        features={"categorical": [], "numeric": []},
        artifacts={"items": "items.parquet"},
    )


def test_round_trip_through_the_file_text() -> None:
    stamped = _ctr().stamped("ctr", 3)
    parsed = parse_manifest(json.loads(manifest_json(stamped)))
    assert isinstance(parsed, CTRBundle)
    assert (parsed.name, parsed.version, parsed.kind) == ("ctr", 3, "ctr")
    assert parsed.onnx.inputs[0].shape == [-1, 2] and parsed.created_at
    # Optional sections left unset are left out of the file, not written as null.
    assert "history" not in json.loads(manifest_json(stamped))


def test_faults_name_the_field() -> None:
    data = json.loads(manifest_json(_ctr().stamped("ctr", 1)))
    data["onnx"]["inputs"][0]["dtpye"] = "int64"  # a typo in a section the engine reads
    with pytest.raises(ManifestError, match=r"onnx\.inputs\.0\.dtpye"):
        parse_manifest(data)
    del data["onnx"]["inputs"][0]["dtpye"]
    del data["features"]
    with pytest.raises(ManifestError, match="features: Field required"):
        parse_manifest(data)
    with pytest.raises(ManifestError, match="unknown kind 'ranker'"):
        parse_manifest({**data, "kind": "ranker"})


def test_extra_top_level_keys_are_kept() -> None:
    data = json.loads(manifest_json(_ctr().stamped("ctr", 1)))
    data["tuning_note"] = {"by": "a newer trainer"}
    parsed = parse_manifest(data)
    assert json.loads(manifest_json(parsed))["tuning_note"] == {"by": "a newer trainer"}


def test_kinds_are_declared_once() -> None:
    assert repository.ONNX_KINDS is ONNX_KINDS
    assert set(MODEL_KINDS) - {"onnx"} == set(KINDS)  # "onnx": Triton-layout models
    assert {k for k in KINDS if k in kserve_servicer._ONNX_KINDS} == set(ONNX_KINDS)


def test_the_trainers_bundles_follow_the_contract(trained_repo: Path) -> None:
    """Every manifest the real trainer wrote parses, and writing it again changes nothing the
    engine reads."""
    kinds = set()
    for path in sorted(trained_repo.glob(f"*/*/{MANIFEST_FILE}")):
        data = json.loads(path.read_text())
        parsed = parse_manifest(data)
        kinds.add(type(parsed))
        again = json.loads(manifest_json(parsed))
        assert {k: again[k] for k in data} == data, path
    assert {CTRBundle, RetrievalBundle, ProfilesBundle} <= kinds
