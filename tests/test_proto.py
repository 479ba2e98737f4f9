"""The checked-in generated code matches the .proto files (run `make proto` after editing)."""

from __future__ import annotations

import filecmp
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh(tmp_path) -> None:
    protos = sorted((ROOT / "proto").rglob("*.proto"))
    assert protos
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
    ]
    assert protoc.main([*args, *map(str, protos)]) == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated
    stale = [
        str(rel)
        for rel in generated
        if not filecmp.cmp(tmp_path / rel, ROOT / "proto" / rel, shallow=False)
    ]
    assert not stale, f"stale generated code, run `make proto`: {stale}"
