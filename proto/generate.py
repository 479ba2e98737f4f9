"""Generate the checked-in Python code from the .proto files: `make proto` writes it here, and
tests/test_proto.py writes it into a temporary folder and fails on any difference.

reachrank/v1 compiles from proto/. The vendored KServe v2 / Triton protocol compiles from its
own folder so that its descriptors carry Triton's file names ("grpc_service.proto",
"model_config.proto") and equal tritonclient's: protobuf's process-wide descriptor pool accepts
an identical file twice but refuses `inference.*` defined again under another file name. protoc
then writes the top-level module names those file names imply (`import model_config_pb2`, and
the classes' `__module__`); they are rewritten to reachrank.kserve.v2, as tritonclient's build
does for its own copy.
Usage: python proto/generate.py [OUT] (default: proto/ itself).
"""

from __future__ import annotations

import re
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

PROTO = Path(__file__).resolve().parent
KSERVE = Path("reachrank/kserve/v2")
KSERVE_PACKAGE = "reachrank.kserve.v2"


def _protoc(include: Path, out: Path, protos: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # As `python -m grpc_tools.protoc` does: the well-known types ship inside grpc_tools.
    well_known = files("grpc_tools") / "_proto"
    args = [f"-I{include}", f"-I{well_known}"]
    args += [f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}"]
    if protoc.main(["grpc_tools.protoc", *args, *map(str, protos)]) != 0:
        raise SystemExit(f"protoc failed on {[p.name for p in protos]}")


def _package_paths(folder: Path, modules: set[str]) -> None:
    """Rewrite the top-level names of the modules generated in ``folder`` to the package path."""
    imports = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)
    # The name the message classes report as their `__module__` (pickle looks them up by it).
    builds = re.compile(
        r"^(_builder\.BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')(\w+_pb2)'", re.MULTILINE
    )

    def module_import(match: re.Match[str]) -> str:
        module, alias = match.groups()
        if module not in modules:
            return match.group(0)
        return f"from {KSERVE_PACKAGE} import {module} as {alias}"

    def module_name(match: re.Match[str]) -> str:
        prefix, module = match.groups()
        return f"{prefix}{KSERVE_PACKAGE}.{module}'" if module in modules else match.group(0)

    for path in sorted(folder.glob("*_pb2*")):
        text = imports.sub(module_import, path.read_text())
        path.write_text(builds.sub(module_name, text))


def generate(out: Path) -> None:
    _protoc(PROTO, out, sorted((PROTO / "reachrank/v1").glob("*.proto")))
    kserve = sorted((PROTO / KSERVE).glob("*.proto"))
    _protoc(PROTO / KSERVE, out / KSERVE, kserve)
    _package_paths(out / KSERVE, {f"{p.stem}_pb2" for p in kserve})


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO)
