"""ModelMetadata and Triton ModelConfig from an ONNX signature, on tiny graphs built here: a
batching graph (first axis symbolic) and one with fixed shapes, which Triton describes with
max_batch_size 0 and full dims."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.kserve.metadata import model_config, model_metadata, protocol_shape, signature
from engine.models.base import ModelId


class GraphOnly:
    """Shaped like an OnnxModel as far as the protocol looks: an id and a session."""

    def __init__(self, model_id: ModelId, session: ort.InferenceSession) -> None:
        self.id = model_id
        self.session = session
        self.inputs = {i.name: i for i in session.get_inputs()}


def _model(tmp_path: Path, x_shape: list, y_shape: list, name: str = "tiny") -> GraphOnly:
    """An Identity graph from ``x`` to ``y``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
    )
    # onnxruntime-gpu 1.31 reads IR versions up to 13 (NOTES.md).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return GraphOnly(ModelId(name, 4, "ctr", "CPUExecutionProvider"), session)


@pytest.mark.parametrize(
    ("onnx_shape", "protocol"),
    [(["batch", 8], [-1, 8]), ([None, 3], [-1, 3]), ([2, 3], [2, 3]), ([], [])],
)
def test_protocol_shape(onnx_shape: list, protocol: list[int]) -> None:
    assert protocol_shape(onnx_shape) == protocol


def test_batching_graph(tmp_path: Path) -> None:
    model = _model(tmp_path, ["batch", 5], ["batch", 5])
    meta = model_metadata(model, versions=[2, 4])
    assert (meta.name, list(meta.versions), meta.platform) == (
        "tiny",
        ["2", "4"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 5])]
    config = model_config(model, max_batch_size=512)
    assert config.max_batch_size == 512
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("x", mc.TYPE_FP32, [5])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("y", [5])]
    assert config.version_policy.latest.num_versions == 1


def test_fixed_shape_graph_does_not_batch(tmp_path: Path) -> None:
    model = _model(tmp_path, [3, 5], [3, 5], name="fixed")
    config = model_config(model, max_batch_size=512)
    assert config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[3, 5]]
    assert [list(o.dims) for o in config.output] == [[3, 5]]


def test_batch_only_tensors_show_as_one_value_per_row(tmp_path: Path) -> None:
    model = _model(tmp_path, ["batch"], ["batch"], name="column")
    meta = model_metadata(model, versions=[4])
    assert [list(t.shape) for t in [*meta.inputs, *meta.outputs]] == [[-1, 1], [-1, 1]]
    config = model_config(model, max_batch_size=64)
    assert config.max_batch_size == 64
    for tensor in [*config.input, *config.output]:
        assert list(tensor.dims) == [1]
        assert tensor.HasField("reshape") and list(tensor.reshape.shape) == []
    assert [(t.shape, t.graph_rank) for t in signature(model).inputs] == [([-1, 1], 1)]
