"""tritonclient's generated KServe v2 code and ReachRank's share one process: the server's own.

Both define the messages of protobuf package `inference`, and protobuf's process-wide descriptor
pool refuses a second definition of a name unless it comes from an equal file of the same name.
Ours is generated under Triton's file names (proto/generate.py) and imports as
reachrank.kserve.v2, never as a top-level `inference` (a PyPI package has that name). Here the
unchanged `tritonclient.grpc` calls ModelInfer on a server running in the test process.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as tg
from reachrank.kserve.v2 import grpc_service_pb2, model_config_pb2
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service
from tritonclient.utils import np_to_triton_dtype

from engine.kserve import SERVICE_NAME
from engine.server import RunningServer
from tests.engine.kserve_helpers import as_protocol, ctr_inputs, reference

IMPORTS = {
    "ours first": "import engine.kserve, tritonclient.grpc",
    "tritonclient first": "import tritonclient.grpc, engine.kserve",
}


def test_one_copy_of_the_protocol_serves_both() -> None:
    assert grpc_service_pb2.DESCRIPTOR is triton_service.DESCRIPTOR
    assert model_config_pb2.DESCRIPTOR is triton_config.DESCRIPTOR
    assert SERVICE_NAME == "inference.GRPCInferenceService"  # the wire name did not move
    assert "inference" not in sys.modules


@pytest.mark.parametrize("order", IMPORTS)
def test_either_import_order_works(order: str) -> None:
    """In a fresh process, since this one has imported both already."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS[order]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_tritonclient_model_infer_against_our_server(server: RunningServer) -> None:
    arrays = ctr_inputs(server.registry, rows=8)
    inputs = []
    for name, array in arrays.items():
        shaped = as_protocol(array)  # as ModelMetadata shows the inputs
        tensor = tg.InferInput(name, list(shaped.shape), np_to_triton_dtype(shaped.dtype))
        tensor.set_data_from_numpy(shaped)
        inputs.append(tensor)
    want = reference(server.registry, "ctr", arrays)
    client = tg.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        result = client.infer(
            "ctr",
            inputs,
            outputs=[tg.InferRequestedOutput(name) for name in want],
            request_id="one-process",
        )
    finally:
        client.close()
    response = result.get_response()
    assert isinstance(response, grpc_service_pb2.ModelInferResponse)
    assert (response.model_name, response.id) == ("ctr", "one-process")
    for name, array in want.items():
        got, array = result.as_numpy(name), as_protocol(array)
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_allclose(got, array, rtol=1e-6, atol=1e-7)
