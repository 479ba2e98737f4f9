"""Execution-provider choice: CUDA only when a GPU is visible and the runtime has it; what runs
is read back from the session (onnxruntime-gpu lists CUDA even on machines without a GPU)."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from engine.repository import read_bundle
from engine.runtime import CPU, CUDA, choose_providers, create_session, gpu_visible
from engine.settings import Settings


@pytest.mark.parametrize(
    ("device", "available", "has_gpu", "expected"),
    [
        ("auto", [CUDA, CPU], True, [CUDA, CPU]),
        ("auto", [CUDA, CPU], False, [CPU]),  # the onnxruntime-gpu-without-GPU trap
        ("auto", [CPU], True, [CPU]),  # a CPU-only build on a GPU machine
        ("cpu", [CUDA, CPU], True, [CPU]),
        ("cuda", [CUDA, CPU], True, [CUDA, CPU]),
        ("cuda", [CUDA, CPU], False, [CPU]),  # asked for, impossible: CPU, with a warning
    ],
)
def test_choose_providers(
    device: str, available: list[str], has_gpu: bool, expected: list[str]
) -> None:
    assert choose_providers(device, available, has_gpu) == expected


def test_hidden_devices_mean_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_visible() is False


def test_session_reports_the_provider_it_really_uses(trained_repo) -> None:
    ref = read_bundle(trained_repo, "ctr")
    session, provider = create_session(ref.file("onnx"), Settings(repo=trained_repo, device="auto"))
    assert provider == session.get_providers()[0]
    if not gpu_visible():
        assert provider == CPU
    assert CPU in ort.get_available_providers()


def test_the_automatic_thread_count_follows_the_graphs_cost(monkeypatch, trained_repo) -> None:
    """One intra-op thread for a light graph, one per core for one that is slow on one
    thread; an explicit setting is used as given."""
    import onnxruntime as ort

    from engine import runtime
    from engine.settings import Settings

    model = next((trained_repo / "ctr").glob("*/model.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    one = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    took = runtime.probe_seconds(one)
    assert took is not None and took > 0  # zeros are valid rows of ReachRank's own models
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(runtime, "HEAVY_PROBE_S", took * 100)  # this graph counts as light
    assert runtime.auto_intra_threads(one, model) == 1
    monkeypatch.setattr(runtime, "HEAVY_PROBE_S", 0.0)  # ... and now as heavy
    assert runtime.auto_intra_threads(one, model) == 4
    seen: list[int] = []
    real = runtime._session

    def recording(path, settings, threads, providers):
        seen.append(threads)
        return real(path, settings, threads, providers)

    monkeypatch.setattr(runtime, "_session", recording)
    runtime.create_session(model, Settings(device="cpu"))
    assert seen == [1, 4]  # probed on one thread, rebuilt with one per core
    seen.clear()
    runtime.create_session(model, Settings(device="cpu", ort_intra_op_threads=3))
    assert seen == [3]
