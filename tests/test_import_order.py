"""Every public module imports on its own in a fresh interpreter (no import cycle that only
works when another module happened to be imported first)."""

from __future__ import annotations

import subprocess
import sys

import pytest

ENTRY_MODULES = (
    "engine.registry",
    "engine.kserve",
    "engine.kserve.servicer",
    "engine.models.triton",
    "engine.pipelines",
    "engine.server",
    "training.cli",
    "clients",
)


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_module_imports_first(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
