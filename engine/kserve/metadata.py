"""What a served ONNX model looks like through the protocol: its tensor signature, its
ModelMetadata, and the Triton ModelConfig perf_analyzer insists on.

A graph tensor that is only the batch axis ([batch], e.g. `pctr` or `user_index`) appears as
[-1, 1], with config dims [1] and an empty reshape, as Triton's ONNX backend shows such a
model: perf_analyzer cannot build an input whose per-row shape is empty. ModelInfer takes
[batch, 1] (or the graph's own [batch]) and answers [batch, 1].
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import onnxruntime as ort
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.kserve.datatypes import config_datatype, onnx_datatype
from engine.models.base import OnnxModel
from engine.runtime import CUDA

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]
    """Protocol shape, batch axis (-1) included."""
    graph_rank: int
    """Rank of the tensor in the ONNX graph (one less than ``len(shape)`` for [batch])."""


@dataclass(frozen=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batches: bool
    """Every tensor's first axis is variable: the protocol's batch axis."""


def protocol_shape(onnx_shape: Sequence[int | str | None]) -> list[int]:
    """ONNX dims as protocol dims: symbolic or unknown ones (``"batch"``, None) become -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in onnx_shape]


# Signatures are read once per loaded model; the entry goes when the model is released.
_SIGNATURES: weakref.WeakKeyDictionary[OnnxModel, Signature] = weakref.WeakKeyDictionary()


def _specs(nodes: Sequence[ort.NodeArg], batches: bool) -> list[TensorSpec]:
    specs = []
    for node in nodes:
        shape = protocol_shape(node.shape)
        # Triton's view of a [batch] tensor: one value per row.
        view = [*shape, 1] if batches and len(shape) == 1 else shape
        specs.append(TensorSpec(node.name, onnx_datatype(node.type), view, len(shape)))
    return specs


def signature(model: OnnxModel) -> Signature:
    """The model's tensors as the protocol shows them (read once per loaded model)."""
    found = _SIGNATURES.get(model)
    if found is None:
        inputs, outputs = model.session.get_inputs(), model.session.get_outputs()
        batches = all(protocol_shape(n.shape)[:1] == [-1] for n in [*inputs, *outputs])
        found = Signature(_specs(inputs, batches), _specs(outputs, batches), batches)
        _SIGNATURES[model] = found
    return found


def model_metadata(model: OnnxModel, versions: Sequence[int]) -> pb.ModelMetadataResponse:
    """Metadata of ``model``; ``versions`` are the model's loaded versions."""
    sig = signature(model)
    meta = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.id.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in sig.inputs],
        outputs=[meta(name=t.name, datatype=t.datatype, shape=t.shape) for t in sig.outputs],
    )


def _dims(spec: TensorSpec, batches: bool) -> dict[str, object]:
    """Config dims (without the batch axis when the model batches, as Triton writes them)
    and, for a [batch] graph tensor shown as [-1, 1], the empty reshape back to the graph."""
    dims = spec.shape[1:] if batches else spec.shape
    if len(spec.shape) > spec.graph_rank:
        return {"dims": dims, "reshape": mc.ModelTensorReshape(shape=[])}
    return {"dims": dims}


def model_config(model: OnnxModel, max_batch_size: int) -> mc.ModelConfig:
    """Triton's view of the model; ``max_batch_size`` applies when it batches (0 otherwise)."""
    sig = signature(model)
    kind = (
        mc.ModelInstanceGroup.KIND_GPU
        if model.id.provider == CUDA
        else mc.ModelInstanceGroup.KIND_CPU
    )
    return mc.ModelConfig(
        name=model.id.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=max_batch_size if sig.batches else 0,
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
        input=[
            mc.ModelInput(
                name=t.name, data_type=config_datatype(t.datatype), **_dims(t, sig.batches)
            )
            for t in sig.inputs
        ],
        output=[
            mc.ModelOutput(
                name=t.name, data_type=config_datatype(t.datatype), **_dims(t, sig.batches)
            )
            for t in sig.outputs
        ],
        instance_group=[mc.ModelInstanceGroup(name=model.id.name, kind=kind, count=1)],
    )
