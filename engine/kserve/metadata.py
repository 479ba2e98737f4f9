"""What a served ONNX model looks like through the protocol: its ModelMetadata and the Triton
ModelConfig perf_analyzer insists on, both read from the graph's signature."""

from __future__ import annotations

from collections.abc import Sequence

from inference import grpc_service_pb2 as pb
from inference import model_config_pb2 as mc

from engine.kserve.datatypes import config_datatype, onnx_datatype
from engine.models.base import OnnxModel
from engine.runtime import CUDA

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


def protocol_shape(onnx_shape: Sequence[int | str | None]) -> list[int]:
    """ONNX dims as protocol dims: symbolic or unknown ones (``"batch"``, None) become -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in onnx_shape]


def input_datatypes(model: OnnxModel) -> dict[str, str]:
    """``{input name: protocol datatype}`` of a model."""
    return {name: onnx_datatype(node.type) for name, node in model.inputs.items()}


def _signature(model: OnnxModel) -> tuple[list[tuple[str, str, list[int]]], ...]:
    """(name, datatype, shape) of the inputs and of the outputs, in graph order."""
    return tuple(
        [(n.name, onnx_datatype(n.type), protocol_shape(n.shape)) for n in nodes]
        for nodes in (model.session.get_inputs(), model.session.get_outputs())
    )


def model_metadata(model: OnnxModel, versions: Sequence[int]) -> pb.ModelMetadataResponse:
    """Metadata of ``model``; ``versions`` are the model's loaded versions."""
    inputs, outputs = _signature(model)
    meta = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.id.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[meta(name=n, datatype=dt, shape=s) for n, dt, s in inputs],
        outputs=[meta(name=n, datatype=dt, shape=s) for n, dt, s in outputs],
    )


def model_config(model: OnnxModel, max_batch_size: int) -> mc.ModelConfig:
    """Triton's view of the model. When every tensor's first axis is variable the model batches:
    ``max_batch_size`` is positive and dims leave the batch axis out, as Triton writes them."""
    inputs, outputs = _signature(model)
    batches = all(s and s[0] == -1 for _, _, s in inputs + outputs)
    cut = 1 if batches else 0
    kind = (
        mc.ModelInstanceGroup.KIND_GPU
        if model.id.provider == CUDA
        else mc.ModelInstanceGroup.KIND_CPU
    )
    return mc.ModelConfig(
        name=model.id.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=max_batch_size if batches else 0,
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
        input=[
            mc.ModelInput(name=n, data_type=config_datatype(dt), dims=s[cut:])
            for n, dt, s in inputs
        ],
        output=[
            mc.ModelOutput(name=n, data_type=config_datatype(dt), dims=s[cut:])
            for n, dt, s in outputs
        ],
        instance_group=[mc.ModelInstanceGroup(name=model.id.name, kind=kind, count=1)],
    )
