"""Drive a ReachRank server with the unchanged `tritonclient.grpc` and write what it saw.

Run in its own process by test_kserve_tritonclient.py, as a client apart from the server.
Usage: python kserve_tritonclient_probe.py URL DIR
(DIR holds inputs.npz with keys "<model>/<input>"; outputs.npz and result.json are written).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException, np_to_triton_dtype


def _inputs(arrays: dict[str, np.ndarray], model: str) -> list[tg.InferInput]:
    inputs = []
    for key, array in arrays.items():
        owner, name = key.split("/")
        if owner == model:
            tensor = tg.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
    return inputs


def _error(call: Callable[[], Any]) -> dict[str, str | None]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    return {"status": None, "message": None}


def main(url: str, workdir: Path) -> None:
    client = tg.InferenceServerClient(url)
    arrays = dict(np.load(workdir / "inputs.npz"))
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "ctr_ready": client.is_model_ready("ctr"),
        "ctr_v999_ready": client.is_model_ready("ctr", "999"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "ctr_metadata": client.get_model_metadata("ctr", as_json=True),
        "ctr_config": client.get_model_config("ctr", as_json=True),
    }
    outputs: dict[str, np.ndarray] = {}
    for model in ("ctr", "retrieval"):
        names = [o["name"] for o in client.get_model_metadata(model, as_json=True)["outputs"]]
        result = client.infer(
            model,
            _inputs(arrays, model),
            outputs=[tg.InferRequestedOutput(n) for n in names],
            request_id=f"probe-{model}",
        )
        for name in names:
            outputs[f"{model}/{name}"] = result.as_numpy(name)
        out[f"{model}_response"] = result.get_response(as_json=True)
    np.savez(workdir / "outputs.npz", **outputs)

    as_fp64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in arrays.items()}
    out["errors"] = {
        "unknown model": _error(lambda: client.infer("nope", _inputs(arrays, "ctr"))),
        "wrong datatype": _error(lambda: client.infer("ctr", _inputs(as_fp64, "ctr"))),
        "metadata of unknown model": _error(lambda: client.get_model_metadata("nope")),
    }
    out["stats"] = client.get_inference_statistics("ctr", as_json=True)
    out["index"] = client.get_model_repository_index(as_json=True)
    client.unload_model("retrieval")
    out["retrieval_ready_after_unload"] = client.is_model_ready("retrieval")
    out["index_after_unload"] = client.get_model_repository_index(as_json=True)
    client.load_model("retrieval")
    out["retrieval_ready_after_load"] = client.is_model_ready("retrieval")
    client.close()
    (workdir / "result.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
