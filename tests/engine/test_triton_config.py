"""Triton model configurations without a server: auto-complete from the graph, the checks that
refuse a configuration naming its field, version policies, reshapes, and the per-model
settings read from config.pbtxt and from a bundle's serving.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import BundleError, InvalidArgument
from engine.model_settings import ModelSettings, bundle_settings, triton_settings
from engine.models.triton import TritonModel
from engine.repository import read_model
from engine.settings import Settings
from engine.triton_config import complete_config, select_versions
from tests.engine.triton_models import SIMPLE_CONFIG, save_model, simple_graph


def _session(graph: onnx.GraphProto) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


SIMPLE = _session(simple_graph())
# No batch axis: a [2, 3] FP32 input, its double out.
FIXED = _session(
    helper.make_graph(
        [helper.make_node("Mul", ["X", "X"], ["Y"])],
        "fixed",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])],
    )
)
# A [batch] tensor in and out.
ROWS = _session(
    helper.make_graph(
        [helper.make_node("Neg", ["X"], ["Y"])],
        "rows",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n"])],
    )
)


def test_auto_complete_of_a_batching_graph() -> None:
    done = complete_config(None, SIMPLE, "simple", "model.onnx")
    assert done.max_batch_size == 4 and done.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in done.input] == [("INPUT0", [16]), ("INPUT1", [16])]
    assert [t.data_type for t in done.output] == [mc.TYPE_INT32, mc.TYPE_INT32]
    assert done.version_policy.latest.num_versions == 1
    assert done.platform == "onnxruntime_onnx" and done.backend == "onnxruntime"
    assert [(g.count, g.kind) for g in done.instance_group] == [(1, mc.ModelInstanceGroup.KIND_CPU)]


def test_auto_complete_without_a_batch_axis_and_of_a_rows_tensor() -> None:
    fixed = complete_config(None, FIXED, "fixed", "model.onnx")
    assert fixed.max_batch_size == 0 and not fixed.HasField("dynamic_batching")
    assert list(fixed.input[0].dims) == [2, 3]
    rows = complete_config(None, ROWS, "rows", "model.onnx")
    assert list(rows.input[0].dims) == [1] and rows.input[0].HasField("reshape")
    assert list(rows.input[0].reshape.shape) == []


def test_a_given_config_is_kept_and_completed() -> None:
    done = complete_config(_config(SIMPLE_CONFIG), SIMPLE, "simple", "config.pbtxt")
    assert done.max_batch_size == 8 and not done.HasField("dynamic_batching")
    assert done.default_model_filename == "model.onnx"


@pytest.mark.parametrize(
    ("session", "text", "field_name"),
    [
        (SIMPLE, 'name: "other"', "name"),
        (SIMPLE, 'platform: "pytorch_libtorch"', "platform"),
        (SIMPLE, 'backend: "python"', "backend"),
        (SIMPLE, "sequence_batching {}", "sequence_batching"),
        (SIMPLE, "max_batch_size: -1", "max_batch_size"),
        (FIXED, "max_batch_size: 8", "max_batch_size"),
        (
            SIMPLE,
            SIMPLE_CONFIG.replace('name: "OUTPUT1"', 'name: "OUTPUT9"'),
            "output[1].name",
        ),
        (
            SIMPLE,
            SIMPLE_CONFIG.replace(
                "TYPE_INT32 dims: [ 16 ] }\n]\noutput", "TYPE_INT64 dims: [ 16 ] }\n]\noutput"
            ),
            "input[1].data_type",
        ),
        (
            SIMPLE,
            'max_batch_size: 8 input [{ name: "INPUT0" data_type: TYPE_INT32 dims: [16] }]',
            "the graph also needs inputs ['INPUT1']",
        ),
        (
            SIMPLE,
            SIMPLE_CONFIG.replace(
                "dims: [ 16 ] }", "dims: [ 4, 4 ] reshape: { shape: [ 15 ] } }", 1
            ),
            "input[0].reshape",
        ),
        (
            SIMPLE,
            SIMPLE_CONFIG + "dynamic_batching { preferred_batch_size: [ 16 ] }",
            "dynamic_batching.preferred_batch_size",
        ),
    ],
)
def test_bad_configs_name_their_field(
    session: ort.InferenceSession, text: str, field_name: str
) -> None:
    with pytest.raises(BundleError) as err:
        complete_config(_config(text), session, "simple", "/repo/simple/config.pbtxt")
    assert str(err.value).startswith("/repo/simple/config.pbtxt: ")
    assert field_name in str(err.value)


def test_version_policies() -> None:
    have = [1, 2, 5]
    assert select_versions(mc.ModelVersionPolicy(), have, "c") == [5]
    latest = mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=2))
    assert select_versions(latest, have, "c") == [2, 5]
    assert (
        select_versions(mc.ModelVersionPolicy(all=mc.ModelVersionPolicy.All()), have, "c") == have
    )
    specific = mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=[5, 1]))
    assert select_versions(specific, have, "c") == [1, 5]
    with pytest.raises(BundleError, match=r"c: version_policy.specific.*missing on disk: \[3\]"):
        select_versions(
            mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=[3])), have, "c"
        )


def test_reshape_between_protocol_and_graph(tmp_path: Path) -> None:
    """Clients send [batch, 4, 4]; the graph takes [batch, 16]; its [batch, 16] outputs go
    back as [batch, 4, 4] (outputs reshape too)."""
    config = SIMPLE_CONFIG.replace("dims: [ 16 ] }", "dims: [ 4, 4 ] reshape: { shape: [ 16 ] } }")
    save_model(simple_graph(), tmp_path / "simple" / "1" / "model.onnx")
    (tmp_path / "simple" / "config.pbtxt").write_text(config)
    model = TritonModel(read_model(tmp_path, "simple"), Settings(repo=tmp_path))
    a = np.arange(32, dtype=np.int32).reshape(2, 4, 4)
    out = model.run({"INPUT0": a, "INPUT1": a})
    assert (
        out["OUTPUT0"].shape == (2, 4, 4)
        and out["OUTPUT0"].ravel().tolist() == (2 * a).ravel().tolist()
    )
    with pytest.raises(InvalidArgument, match=r"must have shape \['batch', 4, 4\]"):
        model.run({"INPUT0": a.reshape(2, 16), "INPUT1": a.reshape(2, 16)})
    model.close()


def test_triton_settings_follow_the_config() -> None:
    text = (
        SIMPLE_CONFIG
        + "dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 300 "
        "default_queue_policy { max_queue_size: 5 } }\n"
        "instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]\n"
        'parameters { key: "intra_op_thread_count" value: { string_value: "2" } }\n'
    )
    done = complete_config(_config(text), SIMPLE, "simple", "config.pbtxt")
    ms = triton_settings(done, Settings(), "config.pbtxt")
    assert (ms.max_batch_rows, ms.max_queue_delay_us, ms.preferred_batch_sizes) == (8, 300, (2, 4))
    assert (ms.batch_workers, ms.max_queue_rows, ms.ort_intra_op_threads) == (3, 40, 2)
    bad = _config('parameters { key: "intra_op_thread_count" value: { string_value: "two" } }')
    with pytest.raises(BundleError, match=r"config.pbtxt: parameters\['intra_op_thread_count'\]"):
        triton_settings(bad, Settings(), "config.pbtxt")


def test_bundle_settings_from_serving_json(tmp_path: Path) -> None:
    version = tmp_path / "ctr" / "3"
    version.mkdir(parents=True)
    settings = Settings(max_batch_rows=1024)
    assert bundle_settings(version, settings) == ModelSettings.defaults(settings)
    (tmp_path / "ctr" / "serving.json").write_text(
        json.dumps({"max_batch_rows": 64, "batch_workers": 2})
    )
    (version / "serving.json").write_text(json.dumps({"batch_workers": 3}))
    ms = bundle_settings(version, settings)
    assert (ms.max_batch_rows, ms.batch_workers, ms.max_queue_rows) == (
        64,
        3,
        settings.max_queue_rows,
    )
    (version / "serving.json").write_text(json.dumps({"max_batch_rows": 0}))
    with pytest.raises(BundleError, match=rf"{version / 'serving.json'}: max_batch_rows: "):
        bundle_settings(version, settings)
    (version / "serving.json").write_text(json.dumps({"grpc_threads": 4}))  # server-wide knob
    with pytest.raises(BundleError, match="grpc_threads: Extra inputs are not permitted"):
        bundle_settings(version, settings)
