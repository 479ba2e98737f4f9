"""A Triton-layout model repository built from a few ONNX nodes: the example clients' `simple`
(INT32 sum and difference) and `simple_string` (the same over BYTES holding decimal numbers),
one model per datatype (configuration completed from the graph), a versioned model, and
models whose config.pbtxt the server must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

# KServe v2 datatype -> ONNX element type and the NumPy dtype tests send.
DATATYPES: dict[str, tuple[int, np.dtype]] = {
    "BOOL": (TensorProto.BOOL, np.dtype(np.bool_)),
    "UINT8": (TensorProto.UINT8, np.dtype(np.uint8)),
    "UINT16": (TensorProto.UINT16, np.dtype(np.uint16)),
    "UINT32": (TensorProto.UINT32, np.dtype(np.uint32)),
    "UINT64": (TensorProto.UINT64, np.dtype(np.uint64)),
    "INT8": (TensorProto.INT8, np.dtype(np.int8)),
    "INT16": (TensorProto.INT16, np.dtype(np.int16)),
    "INT32": (TensorProto.INT32, np.dtype(np.int32)),
    "INT64": (TensorProto.INT64, np.dtype(np.int64)),
    "FP16": (TensorProto.FLOAT16, np.dtype(np.float16)),
    "FP32": (TensorProto.FLOAT, np.dtype(np.float32)),
    "FP64": (TensorProto.DOUBLE, np.dtype(np.float64)),
    "BYTES": (TensorProto.STRING, np.dtype(object)),
}


def simple_config(
    name: str,
    data_type: str = "TYPE_INT32",
    more: str = "",
    runtime: str = 'platform: "onnxruntime_onnx"',
) -> str:
    """The example `simple` model's configuration (two inputs, two outputs, [16], batch 8)."""
    tensors = ",\n".join(
        f'  {{ name: "{n}" data_type: {data_type} dims: [ 16 ] }}' for n in ("INPUT0", "INPUT1")
    )
    outputs = tensors.replace("INPUT", "OUTPUT")
    return (
        f'name: "{name}"\n{runtime}\nmax_batch_size: 8\n'
        f"input [\n{tensors}\n]\noutput [\n{outputs}\n]\n{more}"
    )


SIMPLE_CONFIG = simple_config("simple")
SIMPLE_STRING_CONFIG = simple_config(
    "simple_string",
    "TYPE_STRING",
    "dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 500 }\n"
    "instance_group [ { count: 2 kind: KIND_CPU } ]\n",
    runtime='backend: "onnxruntime"',  # Triton's other way of naming the runtime
)

VERSIONED_CONFIG = """
max_batch_size: 4
version_policy: { latest { num_versions: 2 } }
"""

# Configurations the server must refuse, with the field the message must name.
BAD_CONFIGS: dict[str, tuple[str, str]] = {
    "bad_platform": ('platform: "tensorflow_graphdef"\nmax_batch_size: 8', "platform"),
    "bad_dims": (
        simple_config("bad_dims").replace("dims: [ 16 ]", "dims: [ 8 ]", 1),
        "input[0].dims",
    ),
    "bad_type": (
        simple_config("bad_type").replace("TYPE_INT32", "TYPE_FP32", 1),
        "input[0].data_type",
    ),
    "bad_syntax": ("max_batch_size: eight", "max_batch_size"),
    "bad_field": ("max_batch_size: 8\nbatch_size_max: 8", "batch_size_max"),
}


def save_model(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # onnxruntime(-gpu) builds refuse the newest IR (NOTES.md)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _io(name: str, elem: int, dims: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def simple_graph(name: str = "simple", strings: bool = False) -> onnx.GraphProto:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, [batch, 16] (strings: parsed
    from and written back as decimal text)."""
    elem = TensorProto.STRING if strings else TensorProto.INT32
    nodes = []
    a, b = "INPUT0", "INPUT1"
    if strings:
        nodes += [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        ]
        a, b = "a", "b"
    out0, out1 = ("s", "d") if strings else ("OUTPUT0", "OUTPUT1")
    nodes += [helper.make_node("Add", [a, b], [out0]), helper.make_node("Sub", [a, b], [out1])]
    if strings:
        nodes += [
            helper.make_node("Cast", ["s"], ["OUTPUT0"], to=TensorProto.STRING),
            helper.make_node("Cast", ["d"], ["OUTPUT1"], to=TensorProto.STRING),
        ]
    return helper.make_graph(
        nodes,
        name,
        [_io("INPUT0", elem, ["batch", 16]), _io("INPUT1", elem, ["batch", 16])],
        [_io("OUTPUT0", elem, ["batch", 16]), _io("OUTPUT1", elem, ["batch", 16])],
    )


def datatype_graph(datatype: str) -> onnx.GraphProto:
    """OUT = IN unchanged and AS_FP64 = IN cast to double, [batch, 3], for one datatype."""
    elem = DATATYPES[datatype][0]
    return helper.make_graph(
        [
            helper.make_node("Identity", ["IN"], ["OUT"]),
            helper.make_node("Cast", ["IN"], ["AS_FP64"], to=TensorProto.DOUBLE),
        ],
        f"types_{datatype}",
        [_io("IN", elem, ["batch", 3])],
        [_io("OUT", elem, ["batch", 3]), _io("AS_FP64", TensorProto.DOUBLE, ["batch", 3])],
    )


def versioned_graph(version: int) -> onnx.GraphProto:
    """OUT = IN + version, INT32 [batch, 4]: the answer says which version ran."""
    plus = helper.make_tensor("v", TensorProto.INT32, [1], [version])
    return helper.make_graph(
        [helper.make_node("Add", ["IN", "v"], ["OUT"])],
        "versioned",
        [_io("IN", TensorProto.INT32, ["batch", 4])],
        [_io("OUT", TensorProto.INT32, ["batch", 4])],
        initializer=[plus],
    )


def build_repository(repo: Path) -> Path:
    """Write every model of this module into ``repo`` (Triton's layout); returns ``repo``."""
    save_model(simple_graph(), repo / "simple" / "1" / "model.onnx")
    (repo / "simple" / "config.pbtxt").write_text(SIMPLE_CONFIG)
    save_model(
        simple_graph("simple_string", strings=True), repo / "simple_string" / "1" / "model.onnx"
    )
    (repo / "simple_string" / "config.pbtxt").write_text(SIMPLE_STRING_CONFIG)
    for datatype in DATATYPES:  # no config.pbtxt: completed from the graph
        save_model(
            datatype_graph(datatype), repo / f"types_{datatype.lower()}" / "1" / "model.onnx"
        )
    for version in (1, 2, 3):
        save_model(versioned_graph(version), repo / "versioned" / str(version) / "model.onnx")
    (repo / "versioned" / "config.pbtxt").write_text(VERSIONED_CONFIG)
    for name, (config, _) in BAD_CONFIGS.items():
        save_model(simple_graph(name), repo / name / "1" / "model.onnx")
        (repo / name / "config.pbtxt").write_text(config)
    return repo


def values(datatype: str, rows: int = 2) -> np.ndarray:
    """A [rows, 3] array of ``datatype`` holding small distinct values (decimal text for BYTES)."""
    numbers = np.arange(rows * 3).reshape(rows, 3) % 5
    if datatype == "BYTES":
        return np.array([[str(n).encode() for n in row] for row in numbers], dtype=object)
    if datatype == "BOOL":
        return numbers % 2 == 1
    return numbers.astype(DATATYPES[datatype][1])
