"""The unchanged `tritonclient.grpc` 2.51.0 against a real ReachRank server: health, metadata,
Triton model configuration, raw-contents inference (tritonclient's default) checked against
onnxruntime, statistics, the repository index, unload/load, and its view of errors.

tritonclient runs in a child process (tests/engine/kserve_tritonclient_probe.py), a client apart
from the server's process; test_kserve_one_process.py calls the server through tritonclient from
within its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.server import RunningServer
from tests.engine.kserve_helpers import (
    as_protocol,
    ctr_inputs,
    onnx_models,
    reference,
    retrieval_inputs,
)

PROBE = Path(__file__).with_name("kserve_tritonclient_probe.py")


@pytest.fixture(scope="module")
def inputs(server: RunningServer) -> dict[str, dict[str, np.ndarray]]:
    return {
        "ctr": ctr_inputs(server.registry, rows=20),
        "retrieval": retrieval_inputs(server.registry),
    }


@pytest.fixture(scope="module")
def probe(
    server: RunningServer,
    inputs: dict[str, dict[str, np.ndarray]],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    workdir = tmp_path_factory.mktemp("tritonclient")
    # Shaped as the metadata shows them ([batch] graph inputs as [batch, 1]), as a Triton
    # client following ModelMetadata sends them.
    flat = {
        f"{model}/{name}": as_protocol(a)
        for model, arrays in inputs.items()
        for name, a in arrays.items()
    }
    np.savez(workdir / "inputs.npz", **flat)
    done = subprocess.run(
        [sys.executable, str(PROBE), f"127.0.0.1:{server.port}", str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((workdir / "result.json").read_text())
    return result, dict(np.load(workdir / "outputs.npz"))


def test_health_and_server_metadata(probe: tuple[dict[str, Any], dict]) -> None:
    result, _ = probe
    assert result["live"] and result["ready"] and result["ctr_ready"]
    assert not result["ctr_v999_ready"]
    assert result["server_metadata"]["name"] == "reachrank"
    assert "statistics" in result["server_metadata"]["extensions"]


def test_model_metadata_and_config(probe: tuple[dict[str, Any], dict], inputs: dict) -> None:
    result, _ = probe
    width = inputs["ctr"]["cat"].shape[1]
    meta = result["ctr_metadata"]
    # JSON renders int64 as strings, as protobuf's JSON mapping says.
    assert meta["inputs"][0] == {"name": "cat", "datatype": "INT64", "shape": ["-1", str(width)]}
    # The CTR bundle's graph gives pCVR beside pCTR (training.cvr).
    assert meta["outputs"] == [
        {"name": name, "datatype": "FP32", "shape": ["-1", "1"]} for name in ("pctr", "pcvr")
    ]
    config = result["ctr_config"]["config"]
    assert config["platform"] == "onnxruntime_onnx" and int(config["max_batch_size"]) > 0
    assert config["input"][0]["dims"] == [str(width)]


@pytest.mark.parametrize("model", ["ctr", "retrieval"])
def test_infer_matches_onnxruntime(
    probe: tuple[dict[str, Any], dict], inputs: dict, server: RunningServer, model: str
) -> None:
    result, outputs = probe
    want = reference(server.registry, model, inputs[model])
    for name, array in want.items():
        got, array = outputs[f"{model}/{name}"], as_protocol(array)
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_allclose(got, array, rtol=1e-6, atol=1e-7)
    response = result[f"{model}_response"]
    assert (response["model_name"], response["id"]) == (model, f"probe-{model}")


def test_errors_reach_tritonclient_with_their_codes(probe: tuple[dict[str, Any], dict]) -> None:
    errors = probe[0]["errors"]
    assert errors["unknown model"]["status"] == "StatusCode.NOT_FOUND"
    assert errors["metadata of unknown model"]["status"] == "StatusCode.NOT_FOUND"
    assert errors["wrong datatype"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "input 'num'" in errors["wrong datatype"]["message"]


def test_statistics(probe: tuple[dict[str, Any], dict], inputs: dict) -> None:
    (stats,) = probe[0]["stats"]["model_stats"]
    assert stats["name"] == "ctr"
    assert int(stats["execution_count"]) >= 1
    assert int(stats["inference_count"]) >= len(inputs["ctr"]["cat"])
    assert int(stats["inference_stats"]["fail"]["count"]) >= 1  # the wrong-datatype call
    assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0


def test_repository_index_unload_and_load(
    probe: tuple[dict[str, Any], dict], server: RunningServer
) -> None:
    result, _ = probe
    ready = {m["name"] for m in result["index"]["models"] if m.get("state") == "READY"}
    assert ready == set(onnx_models(server.registry))
    assert not result["retrieval_ready_after_unload"]
    after = {m["name"]: m for m in result["index_after_unload"]["models"]}
    assert after["retrieval"]["state"] == "UNAVAILABLE"
    assert result["retrieval_ready_after_load"]
