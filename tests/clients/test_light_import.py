"""The SDK and the root command import none of the server's or trainer's heavy packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "numba", "polars", "onnxruntime", "onnx", "engine", "training", "kernels")
# Optional: imported only when a plot or uvloop is asked for.
OPTIONAL = ("matplotlib", "uvloop", "cryptography")

PROBE = f"""
import json, sys
import clients, clients.client, clients.aio, clients.commands, clients.cli, clients.loadtest_cli
for args in (["--help"], ["client", "--help"], ["loadtest", "--help"]):
    try:
        clients.cli.main(args, standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY + OPTIONAL!r})))
"""


def test_sdk_and_cli_import_no_heavy_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    last_line = done.stdout.strip().splitlines()[-1]
    assert json.loads(last_line) == []
