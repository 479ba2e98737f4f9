"""KServe v2 tensors to NumPy and back: typed `InferTensorContents` or raw little-endian bytes.

Raw bytes decode with `np.frombuffer` (no copy) and are the default of tritonclient and
perf_analyzer; typed contents cost a Python-level conversion per element (NOTES.md), so they are
accepted but not preferred. Every problem is an InvalidArgument naming the tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from reachrank.kserve.v2 import grpc_service_pb2 as pb

from engine.errors import InvalidArgument
from engine.kserve.bytes_codec import (
    bytes_elements,
    bytes_from_contents,
    bytes_from_raw,
    bytes_to_raw,
    is_bytes_array,
)
from engine.kserve.datatypes import CONTENTS_FIELDS, datatype_of, dtype_of

InputTensor = pb.ModelInferRequest.InferInputTensor
OutputTensor = pb.ModelInferResponse.InferOutputTensor


def checked_shape(shape: Sequence[int], where: str) -> tuple[int, ...]:
    """The shape as a tuple; InvalidArgument when a dimension is negative."""
    dims = tuple(shape)
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"{where}: shape {list(dims)} has a negative dimension")
    return dims


def from_raw(data: bytes, datatype: str, shape: Sequence[int], where: str) -> np.ndarray:
    """A read-only array sharing ``data``; its length must be prod(shape) x itemsize."""
    dtype = dtype_of(datatype, where)
    dims = checked_shape(shape, where)
    expected = math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise InvalidArgument(
            f"{where}: {datatype} shape {list(dims)} needs {expected} bytes of raw contents, "
            f"got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def from_contents(tensor: InputTensor, where: str) -> np.ndarray:
    """An array from the typed contents field that matches the tensor's datatype."""
    dtype = dtype_of(tensor.datatype, where)
    dims = checked_shape(tensor.shape, where)
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(f"{where}: {tensor.datatype} can only be sent as raw contents")
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise InvalidArgument(
            f"{where}: datatype {tensor.datatype} is carried in {field}, not {', '.join(others)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != math.prod(dims):
        raise InvalidArgument(
            f"{where}: shape {list(dims)} needs {math.prod(dims)} values in {field}, "
            f"got {len(values)}"
        )
    # Decode at the field's own width first: NumPy would silently wrap 300 into an INT8.
    wide = np.array(values)
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        low, high = wide.min(), wide.max()
        if low < info.min or high > info.max:
            raise InvalidArgument(
                f"{where}: values in [{low}, {high}] are out of range for {tensor.datatype}"
            )
    return wide.astype(dtype, copy=False).reshape(dims)


def decode_inputs(
    request: pb.ModelInferRequest, expected: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Named arrays from a request, checked against the model's ``{input name: datatype}``.

    Raw contents, when present, must cover every input (in order) and no input may also carry
    typed contents, as the protocol requires. BYTES inputs become object arrays of ``str``
    (engine.kserve.bytes_codec).
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        where = f"input {tensor.name!r}"
        want = expected.get(tensor.name)
        if want is None:
            raise InvalidArgument(
                f"{where} is not an input of model {request.model_name!r} "
                f"(inputs: {', '.join(sorted(expected))})"
            )
        if tensor.name in arrays:
            raise InvalidArgument(f"{where} appears more than once")
        if tensor.datatype != want:
            raise InvalidArgument(
                f"{where} has datatype {tensor.datatype!r}, "
                f"model {request.model_name!r} expects {want}"
            )
        if raw and tensor.HasField("contents"):
            raise InvalidArgument(f"{where} has typed contents and raw_input_contents")
        if want == "BYTES":
            shape = checked_shape(tensor.shape, where)
            arrays[tensor.name] = (
                bytes_from_raw(raw[i], shape, where)
                if raw
                else bytes_from_contents(tensor.contents.bytes_contents, shape, where)
            )
        elif raw:
            arrays[tensor.name] = from_raw(raw[i], tensor.datatype, tensor.shape, where)
        else:
            arrays[tensor.name] = from_contents(tensor, where)
    return arrays


def to_graph_rank(
    arrays: Mapping[str, np.ndarray], graph_ranks: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Inputs as the graph takes them: a [batch, 1] array for a graph input of rank 1 (shown
    to clients as [-1, 1], see metadata) becomes [batch]. Other shapes pass for the model to
    check."""
    return {
        name: array.reshape(array.shape[0])
        if graph_ranks.get(name) == 1 and array.ndim == 2 and array.shape[1] == 1
        else array
        for name, array in arrays.items()
    }


def to_protocol_rank(
    arrays: Mapping[str, np.ndarray], protocol_ranks: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Outputs as the protocol shows them: [batch] becomes [batch, 1] where the protocol
    shape has one more axis than the graph's."""
    return {
        name: array.reshape(*array.shape, 1)
        if protocol_ranks.get(name) == array.ndim + 1
        else array
        for name, array in arrays.items()
    }


def select_outputs(
    outputs: Mapping[str, np.ndarray], requested: Sequence[str], model: str
) -> dict[str, np.ndarray]:
    """The outputs the client asked for, in its order (all of them when it asked for none)."""
    if not requested:
        return dict(outputs)
    unknown = [name for name in requested if name not in outputs]
    if unknown:
        raise InvalidArgument(
            f"requested output {unknown[0]!r} is not an output of model {model!r} "
            f"(outputs: {', '.join(outputs)})"
        )
    return {name: outputs[name] for name in requested}


def encode_outputs(
    outputs: Mapping[str, np.ndarray], raw: bool
) -> tuple[list[OutputTensor], list[bytes]]:
    """Output tensors and, when ``raw`` (or a datatype has no typed field), their raw bytes.

    The protocol forbids mixing the two forms in one response, so one FP16 output makes the
    whole answer raw.
    """
    datatypes = {
        name: "BYTES" if is_bytes_array(array) else datatype_of(array)
        for name, array in outputs.items()
    }
    raw = raw or any(dt not in CONTENTS_FIELDS and dt != "BYTES" for dt in datatypes.values())
    tensors: list[OutputTensor] = []
    contents: list[bytes] = []
    for name, array in outputs.items():
        datatype = datatypes[name]
        tensor = OutputTensor(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            if raw:
                contents.append(bytes_to_raw(array))
            else:
                tensor.contents.bytes_contents.extend(bytes_elements(array))
        elif raw:
            little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            contents.append(little.tobytes())
        else:
            getattr(tensor.contents, CONTENTS_FIELDS[datatype]).extend(array.ravel().tolist())
        tensors.append(tensor)
    return tensors, contents
