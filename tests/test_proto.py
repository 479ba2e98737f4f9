"""The checked-in generated code is what proto/generate.py (`make proto`) makes of the .proto
files now: no file differs, is missing or is left over from an old layout."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"


def _generated(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*_pb2*") if p.suffix in {".py", ".pyi"}}


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(PROTO / "generate.py"), str(tmp_path)], check=True, timeout=120
    )
    fresh, checked_in = _generated(tmp_path), _generated(PROTO)
    assert fresh
    stale = sorted(
        str(rel)
        for rel in fresh & checked_in
        if not filecmp.cmp(tmp_path / rel, PROTO / rel, shallow=False)
    )
    assert not stale, f"stale generated code, run `make proto`: {stale}"
    assert fresh == checked_in, (
        f"missing: {sorted(map(str, fresh - checked_in))}, "
        f"left over: {sorted(map(str, checked_in - fresh))}"
    )


def test_kserve_descriptors_keep_tritons_file_names() -> None:
    """The KServe v2 files register as Triton names them, in the wire package `inference`: what
    lets tritonclient's copy and ours share protobuf's default pool (proto/generate.py)."""
    from reachrank.kserve.v2 import grpc_service_pb2, model_config_pb2

    assert grpc_service_pb2.DESCRIPTOR.name == "grpc_service.proto"
    assert model_config_pb2.DESCRIPTOR.name == "model_config.proto"
    assert [d.name for d in grpc_service_pb2.DESCRIPTOR.dependencies] == ["model_config.proto"]
    assert grpc_service_pb2.DESCRIPTOR.package == model_config_pb2.DESCRIPTOR.package == "inference"
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
