"""One ModelInfer call without gRPC: decode the request, run the model, encode the answer, and
time each phase for the statistics."""

from __future__ import annotations

import time

from reachrank.kserve.v2 import grpc_service_pb2 as pb

from engine.errors import InvalidArgument
from engine.kserve.metadata import signature
from engine.kserve.stats import Timing
from engine.kserve.tensors import (
    decode_inputs,
    encode_outputs,
    select_outputs,
    to_graph_rank,
    to_protocol_rank,
)
from engine.models.base import OnnxModel


def infer_response(
    model: OnnxModel,
    request: pb.ModelInferRequest,
    tensors: list[pb.ModelInferResponse.InferOutputTensor],
    raw: list[bytes],
) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(
        model_name=model.id.name,
        model_version=str(model.id.version),
        id=request.id,
        outputs=tensors,
        raw_output_contents=raw,
    )


def infer(
    model: OnnxModel, request: pb.ModelInferRequest, max_rows: int
) -> tuple[pb.ModelInferResponse, Timing]:
    """The response to ``request`` and how long it took. The answer is raw when the request
    was, because tritonclient reads numeric outputs only from raw contents."""
    start = time.perf_counter_ns()
    sig = signature(model)
    decoded_inputs = decode_inputs(request, {t.name: t.datatype for t in sig.inputs})
    inputs = to_graph_rank(decoded_inputs, {t.name: t.graph_rank for t in sig.inputs})
    batch = None
    for name, array in inputs.items():
        rows = array.shape[0] if array.ndim else 1
        if rows > max_rows:
            raise InvalidArgument(f"input {name!r} has {rows} rows, more than {max_rows}")
        if batch is not None and rows != batch:
            raise InvalidArgument(f"input {name!r} has {rows} rows, the inputs before it {batch}")
        batch = rows
    decoded = time.perf_counter_ns()
    outputs = model.run(inputs)
    ran = time.perf_counter_ns()
    selected = select_outputs(outputs, [o.name for o in request.outputs], model.id.name)
    shaped = to_protocol_rank(selected, {t.name: len(t.shape) for t in sig.outputs})
    tensors, raw = encode_outputs(shaped, raw=bool(request.raw_input_contents))
    response = infer_response(model, request, tensors, raw)
    end = time.perf_counter_ns()
    return response, Timing(batch or 0, decoded - start, ran - decoded, end - ran, end - start)
