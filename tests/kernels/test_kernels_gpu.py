"""The CUDA top-k path: checked under Numba's CUDA simulator, and a clean CPU fallback without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernels import gpu, topk

pytestmark = pytest.mark.slow  # the CUDA simulator runs each kernel in Python: about a minute

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


def test_gpu_failure_falls_back_to_cpu_and_stays_off(rng, monkeypatch, caplog):
    """A CUDA stack that cannot compile the kernels (seen: numba-cuda 0.30 with NumPy 2.5)
    costs one fallback, never a failed request; an explicit device="gpu" still raises."""
    items = rng.standard_normal((300, 8)).astype(np.float32)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    calls = []

    def failing_scan(*args):
        calls.append(args)
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(gpu, "_broken", None)
    monkeypatch.setattr(gpu, "available", lambda: True)
    monkeypatch.setattr(gpu, "simulated", lambda: False)
    monkeypatch.setattr(gpu, "gpu_scan", failing_scan)
    assert gpu.use_gpu_by_default()
    cpu = topk(q, items, 5, device="cpu")
    with caplog.at_level("WARNING", logger="kernels.gpu"):
        first = topk(q, items, 5)
    np.testing.assert_array_equal(first[0], cpu[0])
    assert "row_stack" in gpu.broken() and "GPU top-k disabled" in caplog.text
    assert not gpu.use_gpu_by_default()
    second = topk(q, items, 5)
    np.testing.assert_array_equal(second[0], cpu[0])
    assert len(calls) == 1  # not retried on every request
    with pytest.raises(AttributeError, match="row_stack"):
        topk(q, items, 5, device="gpu")


def test_radix_keys_keep_score_order_and_invert(rng):
    """The GPU select ranks uint32 keys: their order must be the scores' order, NaN key 0."""
    scores = np.concatenate(
        [
            rng.standard_normal(1000).astype(np.float32) * 1e3,
            np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, np.nan], dtype=np.float32),
        ]
    )
    keys = gpu.to_keys(scores)
    real = ~np.isnan(scores)
    assert keys[~real].tolist() == [0] and keys[real].min() > 0
    order = np.argsort(scores[real], kind="stable")
    assert np.all(np.diff(keys[real][order].astype(np.int64)) >= 0)
    np.testing.assert_array_equal(
        gpu.from_keys(keys[real]), np.where(scores[real] == 0, 0, scores[real])
    )
    assert gpu.from_keys(np.array([0], dtype=np.uint32))[0] == -np.inf
