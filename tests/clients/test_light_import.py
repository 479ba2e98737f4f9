"""The SDK and the root command import none of the server's or trainer's heavy packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "numba", "polars", "onnxruntime", "onnx", "engine", "training", "kernels")

PROBE = f"""
import json, sys
import clients, clients.client, clients.aio, clients.commands, clients.cli
try:
    clients.cli.main(["--help"], standalone_mode=False)
    clients.cli.main(["client", "--help"], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""


def test_sdk_and_cli_import_no_heavy_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    last_line = done.stdout.strip().splitlines()[-1]
    assert json.loads(last_line) == []
