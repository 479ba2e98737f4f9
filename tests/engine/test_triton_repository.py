"""A Triton-layout repository served unchanged, checked the way Triton's users check a server:
tritonclient (sync, async callback and aio clients) calling the real ReachRank server on
loopback, on ONNX builds of the example clients' `simple` and `simple_string` models, on one
model per datatype (raw and typed contents), on a versioned model, on configurations the
server must refuse while the rest serves, and through system shared memory."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tga
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from engine.kserve.datatypes import CONTENTS_FIELDS
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.triton_models import BAD_CONFIGS, DATATYPES, build_repository, values

INPUT0 = np.arange(16, dtype=np.int32).reshape(1, 16)
INPUT1 = np.ones((1, 16), dtype=np.int32)
# The field of InferTensorContents carrying each datatype (FP16 has none: raw only).
TYPED_FIELDS = {**CONTENTS_FIELDS, "BYTES": "bytes_contents"}


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("triton") / "repo")


@pytest.fixture(scope="module")
def triton_server(triton_repo: Path) -> Iterator[RunningServer]:
    running = start_server(Settings(repo=triton_repo, host="127.0.0.1", port=0, grace_period_s=0))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def url(triton_server: RunningServer) -> str:
    return f"127.0.0.1:{triton_server.port}"


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[tg.InferenceServerClient]:
    with tg.InferenceServerClient(url) as c:
        yield c


def simple_inputs(
    a: np.ndarray = INPUT0, b: np.ndarray = INPUT1, datatype: str = "INT32"
) -> list[tg.InferInput]:
    inputs = [tg.InferInput("INPUT0", list(a.shape), datatype)]
    inputs.append(tg.InferInput("INPUT1", list(b.shape), datatype))
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def outputs(*names: str) -> list[tg.InferRequestedOutput]:
    return [tg.InferRequestedOutput(n) for n in names]


def test_health_and_metadata(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple") and client.is_model_ready("simple", "1")
    assert not client.is_model_ready("simple", "2")
    assert client.get_server_metadata().name == "reachrank"
    meta = client.get_model_metadata("simple", as_json=True)
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": ["-1", "16"]},
        {"name": "INPUT1", "datatype": "INT32", "shape": ["-1", "16"]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]


def test_model_config_is_the_file_completed(client: tg.InferenceServerClient) -> None:
    config = client.get_model_config("simple").config
    assert config.name == "simple" and config.max_batch_size == 8
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert [(t.name, list(t.dims)) for t in config.input] == [("INPUT0", [16]), ("INPUT1", [16])]
    assert config.version_policy.latest.num_versions == 1  # completed: the file has none
    assert config.default_model_filename == "model.onnx"
    strings = client.get_model_config("simple_string").config
    assert list(strings.dynamic_batching.preferred_batch_size) == [2, 4]
    assert strings.dynamic_batching.max_queue_delay_microseconds == 500
    assert sum(g.count for g in strings.instance_group) == 2


def test_each_model_batches_as_its_config_says(triton_server: RunningServer) -> None:
    strings = triton_server.registry.get("simple_string").batcher
    assert strings is not None and strings.workers == 2  # instance_group count
    assert strings.max_batch_rows == 8 and strings.preferred == {2, 4}
    assert strings.max_queue_delay == pytest.approx(500e-6)
    simple = triton_server.registry.get("simple").batcher  # no dynamic_batching: one at a time
    assert simple is not None and simple.max_batch_rows == 1 and simple.workers == 1
    auto = triton_server.registry.get("types_fp32").batcher  # completed: batch 4, batching on
    assert auto is not None and auto.max_batch_rows == 4


def test_auto_complete_from_the_graph(client: tg.InferenceServerClient) -> None:
    """A model with no config.pbtxt: inputs, outputs and batching read from the graph."""
    config = client.get_model_config("types_fp16").config
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [
        (t.name, tg.model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input
    ] == [("IN", "TYPE_FP16", [3])]
    assert [t.name for t in config.output] == ["OUT", "AS_FP64"]
    string_config = client.get_model_config("types_bytes").config
    assert tg.model_config_pb2.DataType.Name(string_config.input[0].data_type) == "TYPE_STRING"


def test_simple_sync_infer(client: tg.InferenceServerClient) -> None:
    result = client.infer(
        "simple",
        simple_inputs(),
        outputs=outputs("OUTPUT0", "OUTPUT1"),
        model_version="1",
        request_id="req-7",
        client_timeout=60,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), INPUT0 + INPUT1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), INPUT0 - INPUT1)
    response = result.get_response()
    assert response.model_name == "simple" and response.model_version == "1"
    assert response.id == "req-7"


def test_simple_batch_of_eight_and_one_output(client: tg.InferenceServerClient) -> None:
    a = np.arange(8 * 16, dtype=np.int32).reshape(8, 16)
    b = np.full((8, 16), 3, dtype=np.int32)
    result = client.infer("simple", simple_inputs(a, b), outputs=outputs("OUTPUT1"))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None


def test_simple_async_infer_callback(client: tg.InferenceServerClient) -> None:
    done = threading.Event()
    got: dict[str, object] = {}

    def callback(result: tg.InferResult | None, error: InferenceServerException | None) -> None:
        got["result"], got["error"] = result, error
        done.set()

    client.async_infer("simple", simple_inputs(), callback, outputs=outputs("OUTPUT0"))
    assert done.wait(60)
    assert got["error"] is None
    np.testing.assert_array_equal(got["result"].as_numpy("OUTPUT0"), INPUT0 + INPUT1)


def test_simple_aio_client(url: str) -> None:
    async def run() -> tuple[bool, np.ndarray, object]:
        async with tga.InferenceServerClient(url) as c:
            ready = await c.is_model_ready("simple")
            result = await c.infer("simple", simple_inputs())
            stats = await c.get_inference_statistics("simple", as_json=True)
            return ready, result.as_numpy("OUTPUT1"), stats

    ready, difference, stats = asyncio.run(run())
    assert ready
    np.testing.assert_array_equal(difference, INPUT0 - INPUT1)
    assert stats["model_stats"][0]["name"] == "simple"


def test_simple_string(client: tg.InferenceServerClient) -> None:
    a = np.array([[str(i).encode() for i in range(16)]], dtype=object)
    b = np.array([[b"1"] * 16], dtype=object)
    result = client.infer("simple_string", simple_inputs(a, b, "BYTES"))
    assert result.as_numpy("OUTPUT0").tolist() == [[str(i + 1).encode() for i in range(16)]]
    assert result.as_numpy("OUTPUT1").tolist() == [[str(i - 1).encode() for i in range(16)]]


def test_statistics_count_each_request(client: tg.InferenceServerClient) -> None:
    def snapshot() -> dict:
        return client.get_inference_statistics("simple", "1", as_json=True)["model_stats"][0]

    before = snapshot()
    for rows in (1, 3):
        a = np.zeros((rows, 16), dtype=np.int32)
        client.infer("simple", simple_inputs(a, a))
    after = snapshot()
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 4
    assert int(after["execution_count"]) - int(before.get("execution_count", 0)) == 2
    success = after["inference_stats"]["success"]
    assert int(success["count"]) - int(before["inference_stats"]["success"].get("count", 0)) == 2
    assert {int(b["batch_size"]) for b in after["batch_stats"]} >= {1, 3}


def test_custom_args_headers_and_keepalive(url: str) -> None:
    """simple_grpc_custom_args_client / simple_grpc_keepalive_client: channel arguments,
    keepalive options and custom headers reach a server that still answers."""
    channel_args = [
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.max_receive_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
    ]
    with tg.InferenceServerClient(url, channel_args=channel_args) as custom:
        result = custom.infer("simple", simple_inputs(), headers={"test": "1"})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), INPUT0 + INPUT1)
    keepalive = tg.KeepAliveOptions(
        keepalive_time_ms=2**31 - 1,
        keepalive_timeout_ms=20000,
        keepalive_permit_without_calls=False,
        http2_max_pings_without_data=2,
    )
    with tg.InferenceServerClient(url, keepalive_options=keepalive) as kept:
        result = kept.infer("simple", simple_inputs())
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), INPUT0 - INPUT1)


@pytest.fixture(scope="module")
def stub(url: str) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _typed_simple() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name, data in (("INPUT0", INPUT0), ("INPUT1", INPUT1)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents[:] = data.ravel().tolist()
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    return request


def test_explicit_int_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """grpc_explicit_int_content_client: typed int_contents in, raw contents out (as Triton)."""
    response = stub.ModelInfer(_typed_simple())
    got = [np.frombuffer(raw, dtype=np.int32) for raw in response.raw_output_contents]
    np.testing.assert_array_equal(got[0], (INPUT0 + INPUT1).ravel())
    np.testing.assert_array_equal(got[1], (INPUT0 - INPUT1).ravel())
    mixed = _typed_simple()
    mixed.raw_input_contents.extend([INPUT0[0, :8].tobytes()])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(mixed)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for "
        "model 'simple'" in err.value.details()
    )


def test_explicit_byte_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="simple_string")
    for name, text in (("INPUT0", [str(i) for i in range(16)]), ("INPUT1", ["2"] * 16)):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[1, 16])
        tensor.contents.bytes_contents[:] = [t.encode() for t in text]
    response = stub.ModelInfer(request)
    sums = tg.deserialize_bytes_tensor(response.raw_output_contents[0])
    assert sums.tolist() == [str(i + 2).encode() for i in range(16)]


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_raw_through_tritonclient(
    client: tg.InferenceServerClient, datatype: str
) -> None:
    sent = values(datatype)
    tensor = tg.InferInput("IN", list(sent.shape), datatype)
    tensor.set_data_from_numpy(sent)
    result = client.infer(f"types_{datatype.lower()}", [tensor])
    back = result.as_numpy("OUT")
    assert result.get_output("OUT").datatype == datatype
    if datatype == "BYTES":
        assert back.tolist() == sent.tolist()
        expected = np.array([[float(x) for x in row] for row in sent])
    else:
        assert back.dtype == sent.dtype
        np.testing.assert_array_equal(back, sent)
        expected = sent.astype(np.float64)
    np.testing.assert_array_equal(result.as_numpy("AS_FP64"), expected)


@pytest.mark.parametrize("datatype", list(TYPED_FIELDS))
def test_every_datatype_as_typed_contents(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str
) -> None:
    sent = values(datatype)
    request = service_pb2.ModelInferRequest(model_name=f"types_{datatype.lower()}")
    tensor = request.inputs.add(name="IN", datatype=datatype, shape=list(sent.shape))
    getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(sent.ravel().tolist())
    response = stub.ModelInfer(request)
    names = [o.name for o in response.outputs]
    raw = dict(zip(names, response.raw_output_contents, strict=True))
    if datatype == "BYTES":
        assert tg.deserialize_bytes_tensor(raw["OUT"]).tolist() == sent.ravel().tolist()
    else:
        np.testing.assert_array_equal(
            np.frombuffer(raw["OUT"], dtype=sent.dtype.newbyteorder("<")), sent.ravel()
        )


def test_fp16_has_no_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="types_fp16")
    tensor = request.inputs.add(name="IN", datatype="FP16", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 can only be sent as raw" in err.value.details()


@pytest.mark.parametrize(
    ("model", "inputs", "message"),
    [
        (
            "simple",
            simple_inputs(np.zeros((9, 16), np.int32), np.zeros((9, 16), np.int32)),
            "batch size 9 is outside 1..max_batch_size (8)",
        ),
        (
            "simple",
            simple_inputs(np.zeros((1, 15), np.int32), np.zeros((1, 15), np.int32)),
            "must have shape ['batch', 16]",
        ),
        (
            "simple",
            simple_inputs(np.zeros((1, 16), np.int32), np.zeros((2, 16), np.int32)),
            "batch size 2, the inputs before it 1",
        ),
        (
            "simple",
            simple_inputs(np.zeros((1, 16), np.int64), np.zeros((1, 16), np.int64), "INT64"),
            "model 'simple' expects INT32",
        ),
        ("simple", simple_inputs()[:1], "missing ['INPUT1']"),
        (
            "simple_string",
            simple_inputs(
                np.array([[b"\xff"] * 16], dtype=object),
                np.array([[b"1"] * 16], dtype=object),
                "BYTES",
            ),
            "not UTF-8",
        ),
    ],
)
def test_bad_requests_are_invalid_argument(
    client: tg.InferenceServerClient, model: str, inputs: list, message: str
) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, inputs)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in err.value.message()


def _versioned(client: tg.InferenceServerClient, version: str = "") -> int:
    tensor = tg.InferInput("IN", [1, 4], "INT32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.int32))
    return int(client.infer("versioned", [tensor], model_version=version).as_numpy("OUT")[0, 0])


def test_version_policy_latest_two(client: tg.InferenceServerClient) -> None:
    assert client.get_model_metadata("versioned").versions == ["2", "3"]
    assert _versioned(client) == 3 and _versioned(client, "2") == 2
    assert not client.is_model_ready("versioned", "1")
    with pytest.raises(InferenceServerException, match="version 1"):
        _versioned(client, "1")


def test_bad_configs_refused_naming_file_and_field(
    client: tg.InferenceServerClient, triton_repo: Path
) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    for name, (_, field_name) in BAD_CONFIGS.items():
        row = index[name]
        assert row.state == "UNAVAILABLE"
        assert str(triton_repo / name / "config.pbtxt") in row.reason
        assert field_name in row.reason, row.reason
        assert not client.is_model_ready(name)
    assert index["simple"].state == "READY"  # the rest serves


def test_system_shared_memory(client: tg.InferenceServerClient) -> None:
    """simple_grpc_shm_client: inputs read from, outputs written to registered POSIX regions
    (made here with the standard library: tritonclient 2.51's shm helper needs pkg_resources)."""
    size = INPUT0.nbytes  # 64 bytes per [1, 16] INT32 tensor
    region_in = SharedMemory(f"reachrank_in_{os.getpid()}", create=True, size=2 * size)
    region_out = SharedMemory(f"reachrank_out_{os.getpid()}", create=True, size=2 * size)
    key_in, key_out = f"/{region_in.name}", f"/{region_out.name}"
    try:
        region_in.buf[: 2 * size] = INPUT0.tobytes() + INPUT1.tobytes()
        client.register_system_shared_memory("input_data", key_in, 2 * size)
        client.register_system_shared_memory("output_data", key_out, 2 * size)
        regions = client.get_system_shared_memory_status(as_json=True)["regions"]
        assert set(regions) == {"input_data", "output_data"}
        assert regions["input_data"]["key"] == key_in
        inputs = [tg.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_shared_memory("input_data", size)
        inputs[1].set_shared_memory("input_data", size, offset=size)
        requested = outputs("OUTPUT0", "OUTPUT1")
        requested[0].set_shared_memory("output_data", size)
        requested[1].set_shared_memory("output_data", size, offset=size)
        result = client.infer("simple", inputs, outputs=requested)
        assert not result.get_response().raw_output_contents  # the bytes went to the region
        assert list(result.get_output("OUTPUT0").shape) == [1, 16]
        out = np.frombuffer(bytes(region_out.buf[: 2 * size]), dtype=np.int32).reshape(2, 1, 16)
        np.testing.assert_array_equal(out[0], INPUT0 + INPUT1)
        np.testing.assert_array_equal(out[1], INPUT0 - INPUT1)
        with pytest.raises(InferenceServerException, match="already in manager"):
            client.register_system_shared_memory("input_data", key_in, 2 * size)
        with pytest.raises(InferenceServerException, match="one object under /dev/shm"):
            client.register_system_shared_memory("escape", "/../etc/passwd", 4)
        client.unregister_system_shared_memory("input_data")
        with pytest.raises(InferenceServerException, match="'input_data' is not registered"):
            client.infer("simple", inputs, outputs=requested)
    finally:
        client.unregister_system_shared_memory()
        for region in (region_in, region_out):
            region.close()
            region.unlink()
    assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}
