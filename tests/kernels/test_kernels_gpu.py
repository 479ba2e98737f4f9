"""The CUDA top-k path: checked under Numba's CUDA simulator, and a clean CPU fallback without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernels import gpu, topk

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_kernels_match_cpu_under_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    env.setdefault("NUMBA_CACHE_DIR", str(tmp_path / "numba_cache"))
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("cudasim_check.py"))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cudasim topk matches cpu" in done.stdout


def test_device_choice_falls_back_without_gpu(rng):
    items = rng.standard_normal((200, 8)).astype(np.float32)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    cpu = topk(q, items, 5, device="cpu")
    auto = topk(q, items, 5)
    np.testing.assert_array_equal(auto[0], cpu[0])
    if gpu.available():
        np.testing.assert_allclose(topk(q, items, 5, device="gpu")[1], cpu[1], rtol=1e-5)
    else:
        assert not gpu.use_gpu_by_default()
        with pytest.raises(RuntimeError, match="no CUDA device"):
            topk(q, items, 5, device="gpu")
    with pytest.raises(ValueError, match="device"):
        topk(q, items, 5, device="tpu")
