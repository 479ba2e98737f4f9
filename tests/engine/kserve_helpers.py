"""Shared by the KServe v2 tests: a stub on a server, raw-contents requests, realistic feature
rows from the served models, and reference outputs from a separate onnxruntime session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import numpy as np
import onnxruntime as ort
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from reachrank.kserve.v2 import grpc_service_pb2_grpc as pb_grpc

from engine.models.base import OnnxModel
from engine.models.ctr import CTRModel
from engine.models.retrieval import RetrievalModel
from engine.registry import ModelRegistry


def ctr_inputs(registry: ModelRegistry, rows: int = 16) -> dict[str, np.ndarray]:
    model = registry.get("ctr")
    assert isinstance(model, CTRModel)
    cat, num = model.features("u3", np.arange(rows, dtype=np.int64) % model.store.n_items, {})
    return {"cat": cat, "num": num}


def retrieval_inputs(registry: ModelRegistry, rows: int = 12) -> dict[str, np.ndarray]:
    model = registry.get("retrieval")
    assert isinstance(model, RetrievalModel)
    users, items = len(model.user_ids), len(model.item_ids)
    return {
        "user_index": np.arange(rows, dtype=np.int64) % users,
        "item_index": (np.arange(rows, dtype=np.int64) * 7) % items,
    }


def reference(
    registry: ModelRegistry, name: str, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The model file's outputs from a fresh onnxruntime session, outside the server."""
    path = registry.get(name).ref.file("onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs), strict=True))


def onnx_models(registry: ModelRegistry) -> list[str]:
    """Names of the loaded models the inference protocol serves (those with an ONNX graph)."""
    return sorted(n for n in registry.names() if isinstance(registry.get(n), OnnxModel))


DATATYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}


@contextmanager
def open_stub(port: int) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def raw_request(
    model: str, inputs: dict[str, np.ndarray], **fields: object
) -> pb.ModelInferRequest:
    """A ModelInfer request carrying ``inputs`` as raw little-endian bytes."""
    tensor = pb.ModelInferRequest.InferInputTensor
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[
            tensor(name=n, datatype=DATATYPES[a.dtype], shape=a.shape) for n, a in inputs.items()
        ],
        raw_input_contents=[a.tobytes() for a in inputs.values()],
        **fields,
    )


def as_protocol(array: np.ndarray) -> np.ndarray:
    """A graph's [batch] tensor as the protocol shows it, [batch, 1] (engine.kserve.metadata)."""
    return array.reshape(-1, 1) if array.ndim == 1 else array
