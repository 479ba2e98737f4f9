"""The inference protocol for Triton-layout models (engine.models.triton): every datatype in and
out, raw or typed contents in, raw contents out (as Triton answers), shapes as the model's
configuration shows them; and their ModelMetadata. Error wording follows Triton's where its
example clients match on it."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from reachrank.kserve.v2 import grpc_service_pb2 as pb

from engine.errors import InvalidArgument
from engine.kserve.infer import infer_response
from engine.kserve.stats import Timing
from engine.kserve.tensors import decode_inputs, encode_outputs, select_outputs
from engine.models.triton import TritonModel
from engine.triton_config import PLATFORM


def _has_contents(tensor: pb.ModelInferRequest.InferInputTensor) -> bool:
    return tensor.HasField("contents") and bool(tensor.contents.ListFields())


def decode(model: TritonModel, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """Named arrays from the request, each checked against the model's configured input."""
    name = model.ref.name
    raw = request.raw_input_contents
    for tensor in request.inputs:
        if raw and _has_contents(tensor):
            raise InvalidArgument(
                f"contents field must not be specified when using raw_input_contents for "
                f"{tensor.name!r} for model {name!r}"
            )
    return decode_inputs(request, {n: spec.datatype for n, spec in model.input_specs.items()})


def triton_infer(
    model: TritonModel, request: pb.ModelInferRequest
) -> tuple[pb.ModelInferResponse, Timing]:
    """The response to ``request`` and how long each phase took."""
    start = time.perf_counter_ns()
    inputs = decode(model, request)
    decoded = time.perf_counter_ns()
    outputs = model.run(inputs)
    ran = time.perf_counter_ns()
    selected = select_outputs(outputs, [o.name for o in request.outputs], model.ref.name)
    tensors, raw = encode_outputs(selected, raw=True)  # Triton answers raw contents
    response = infer_response(model, request, tensors, raw)
    end = time.perf_counter_ns()
    batch = next(iter(inputs.values())).shape[0] if inputs and model.max_batch_size else 1
    return response, Timing(batch, decoded - start, ran - decoded, end - ran, end - start)


def _shape(dims: Sequence[int], batches: bool) -> list[int]:
    return [-1, *dims] if batches else list(dims)


def triton_metadata(model: TritonModel, versions: Sequence[int]) -> pb.ModelMetadataResponse:
    """ModelMetadata as Triton shows it: config dims, with the batch axis when it batches."""
    batches = model.max_batch_size > 0
    meta = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model.id.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=[
            meta(name=s.name, datatype=s.datatype, shape=_shape(s.dims, batches))
            for s in model.input_specs.values()
        ],
        outputs=[
            meta(name=s.name, datatype=s.datatype, shape=_shape(s.dims, batches))
            for s in model.output_specs.values()
        ],
    )
