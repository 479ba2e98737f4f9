"""The kernel benchmark still runs end to end (tiny sizes; its speed is never asserted here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the kernel benchmark

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_and_writes_results(tmp_path):
    out = tmp_path / "kernels.json"
    args = ["--items", "4000", "--queries", "8", "--lists", "8", "--probes", "2", "8"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.kernels", *args, "--rounds", "1", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    res = json.loads(out.read_text())
    assert set(res["exact"]) == {"1 query", "64 queries"}
    assert {"numba", "numpy", "bare matmul"} <= set(res["exact"]["64 queries"])
    rows = res["ivf"]["rows"]
    # nprobe = n_lists scans every list: the IVF answer is then the exact one.
    assert all(r["recall"] == 1.0 for r in rows if r["nprobe"] == 8)
    assert "| numba |" in done.stdout
