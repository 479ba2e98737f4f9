"""ModelInfer's common case, planned once per loaded model: every input as raw contents of the
model's own datatype, nothing in shared memory, no parameters, numeric outputs answered raw.

What tritonclient and perf_analyzer send is this case. The plan holds what the general path
(engine.kserve.infer) works out on every request: the inputs' datatypes and dtypes, which
[batch, 1] inputs the graph takes as [batch], the outputs' protocol ranks and datatypes.
Anything else, and any request the plan cannot take as it is (a wrong size, an unknown
input...), returns None before the model runs, so the general path answers it, with its
errors, as before.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from dataclasses import dataclass

import numpy as np
from reachrank.kserve.v2 import grpc_service_pb2 as pb

from engine.kserve.datatypes import DTYPES
from engine.kserve.metadata import signature
from engine.kserve.stats import Timing
from engine.models.base import OnnxModel

OutputTensor = pb.ModelInferResponse.InferOutputTensor
# Raw contents are little-endian; on a big-endian host the general path swaps the bytes.
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True)
class _Input:
    datatype: str
    dtype: np.dtype
    flatten: bool  # a [batch] graph input, sent as [batch, 1]


@dataclass(frozen=True)
class Plan:
    inputs: dict[str, _Input]
    outputs: tuple[tuple[str, str, bool], ...]  # name, datatype, shown as [batch, 1]
    names: frozenset[str]
    model_name: str
    model_version: str


_PLANS: weakref.WeakKeyDictionary[OnnxModel, Plan | None] = weakref.WeakKeyDictionary()


def plan_of(model: OnnxModel) -> Plan | None:
    """The model's plan (None: a BYTES tensor or a non-batching graph; the general path only)."""
    try:
        return _PLANS[model]
    except KeyError:
        pass
    sig = signature(model)
    tensors = [*sig.inputs, *sig.outputs]
    plan = None
    if _LITTLE and sig.batches and all(t.datatype in DTYPES for t in tensors):
        plan = Plan(
            inputs={
                t.name: _Input(
                    t.datatype, DTYPES[t.datatype], t.graph_rank == 1 and len(t.shape) == 2
                )
                for t in sig.inputs
            },
            outputs=tuple((t.name, t.datatype, len(t.shape) > t.graph_rank) for t in sig.outputs),
            names=frozenset(t.name for t in sig.outputs),
            model_name=model.id.name,
            model_version=str(model.id.version),
        )
    _PLANS[model] = plan
    return plan


def fast_infer(
    model: OnnxModel, request: pb.ModelInferRequest, max_rows: int
) -> tuple[pb.ModelInferResponse, Timing] | None:
    """The response and its timing, or None when the general path must answer ``request``."""
    start = time.perf_counter_ns()
    plan = plan_of(model)
    raw = request.raw_input_contents
    count = len(plan.inputs) if plan is not None else -1
    if len(raw) != count or len(request.inputs) != count:
        return None
    inputs: dict[str, np.ndarray] = {}
    batch = -1
    for tensor, data in zip(request.inputs, raw, strict=True):
        spec = plan.inputs.get(tensor.name)
        if (
            spec is None
            or tensor.datatype != spec.datatype
            or tensor.parameters
            or tensor.HasField("contents")
            or tensor.name in inputs
        ):
            return None
        shape = tuple(tensor.shape)
        if not shape or min(shape) < 0 or len(data) != math.prod(shape) * spec.dtype.itemsize:
            return None
        rows = shape[0]
        if rows > max_rows or (batch >= 0 and rows != batch):
            return None
        batch = rows
        array = np.frombuffer(data, dtype=spec.dtype)
        if spec.flatten and len(shape) == 2 and shape[1] == 1:
            inputs[tensor.name] = array  # already [batch]
        else:
            inputs[tensor.name] = array.reshape(shape)
    requested = [o.name for o in request.outputs]
    if requested and (
        any(o.parameters for o in request.outputs)
        or not plan.names.issuperset(requested)
        or len(set(requested)) != len(requested)
    ):
        return None
    decoded = time.perf_counter_ns()
    outputs = model.run(inputs)  # validates dtypes, dims and finiteness as for every caller
    ran = time.perf_counter_ns()
    order = [o for name in requested for o in plan.outputs if o[0] == name] or plan.outputs
    tensors = []
    contents = []
    for name, datatype, widen in order:
        array = outputs[name]
        shape = (*array.shape, 1) if widen and array.ndim == 1 else array.shape
        tensors.append(OutputTensor(name=name, datatype=datatype, shape=shape))
        contents.append(np.ascontiguousarray(array).tobytes())
    response = pb.ModelInferResponse(
        model_name=plan.model_name,
        model_version=plan.model_version,
        id=request.id,
        outputs=tensors,
        raw_output_contents=contents,
    )
    end = time.perf_counter_ns()
    return response, Timing(batch, decoded - start, ran - decoded, end - ran, end - start)
