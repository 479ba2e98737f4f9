"""KServe v2 tensor datatypes: their NumPy dtypes, the `InferTensorContents` field that carries
each one, and the names ONNX and Triton's model configuration use for them. BYTES (ONNX
strings) has no fixed-width dtype: engine.kserve.bytes_codec carries it."""

from __future__ import annotations

import numpy as np
from reachrank.kserve.v2 import model_config_pb2

from engine.errors import InvalidArgument

# Explicit little-endian dtypes: the protocol's raw contents are little-endian whatever the host.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

# The typed field of `InferTensorContents` for each datatype. FP16 has none: the protocol
# carries it only as raw bytes.
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}

_BY_NUMPY = {dtype.newbyteorder("="): name for name, dtype in DTYPES.items()}

_ONNX = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
# Triton's configuration calls BYTES `TYPE_STRING`; every other name is `TYPE_<datatype>`.
_CONFIG_NAMES = {"BYTES": "TYPE_STRING"}
_FROM_CONFIG = {v: k for k, v in _CONFIG_NAMES.items()}


def dtype_of(datatype: str, where: str) -> np.dtype:
    """NumPy dtype of a protocol datatype; InvalidArgument names ``where`` when unsupported."""
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(
            f"{where}: unsupported datatype {datatype!r} (supported: {', '.join(DTYPES)})"
        )
    return dtype


def datatype_of(array: np.ndarray) -> str:
    """Protocol datatype of an array (any byte order); ValueError for dtypes it cannot carry."""
    name = _BY_NUMPY.get(array.dtype.newbyteorder("="))
    if name is None:
        raise ValueError(f"no KServe v2 datatype for NumPy dtype {array.dtype}")
    return name


def onnx_datatype(onnx_type: str) -> str:
    """Protocol datatype of an onnxruntime type string such as ``tensor(float)``."""
    name = _ONNX.get(onnx_type)
    if name is None:
        raise ValueError(f"no KServe v2 datatype for ONNX type {onnx_type}")
    return name


def config_datatype(datatype: str) -> model_config_pb2.DataType.ValueType:
    """Triton model-configuration enum (``TYPE_FP32``...) of a protocol datatype."""
    return model_config_pb2.DataType.Value(_CONFIG_NAMES.get(datatype, f"TYPE_{datatype}"))


def protocol_datatype(config_type: model_config_pb2.DataType.ValueType) -> str:
    """Protocol datatype of a Triton configuration enum (``TYPE_STRING`` is ``BYTES``)."""
    name = model_config_pb2.DataType.Name(config_type)
    return _FROM_CONFIG.get(name, name.removeprefix("TYPE_"))
