"""Every `inference.GRPCInferenceService` RPC against a real server on loopback, through a stub
generated from the vendored protocol: typed and raw contents, metadata, Triton's model
configuration, statistics, the repository, and the status codes of bad requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from reachrank.kserve.v2 import grpc_service_pb2_grpc as pb_grpc
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import InvalidArgument
from engine.kserve.infer import infer
from engine.server import RunningServer
from tests.engine.kserve_helpers import (
    as_protocol,
    ctr_inputs,
    onnx_models,
    open_stub,
    raw_request,
    reference,
    retrieval_inputs,
)

Tensor = pb.ModelInferRequest.InferInputTensor
TYPED = {
    np.dtype(np.int64): ("INT64", "int64_contents"),
    np.dtype(np.float32): ("FP32", "fp32_contents"),
}


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with open_stub(server.port) as opened:
        yield opened


def typed_request(model: str, inputs: dict[str, np.ndarray]) -> pb.ModelInferRequest:
    tensors = []
    for name, array in inputs.items():
        datatype, field = TYPED[array.dtype]
        contents = pb.InferTensorContents(**{field: array.ravel().tolist()})
        tensors.append(Tensor(name=name, datatype=datatype, shape=array.shape, contents=contents))
    return pb.ModelInferRequest(model_name=model, inputs=tensors)


def raw_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {
        t.name: np.frombuffer(data, dtype=dtypes[t.datatype]).reshape(t.shape)
        for t, data in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def status_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_server_live_ready_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "reachrank" and meta.version
    assert set(meta.extensions) == {
        "model_repository",
        "model_configuration",
        "statistics",
        "system_shared_memory",
    }


def test_model_ready(stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer) -> None:
    version = str(server.registry.get("ctr").id.version)
    assert stub.ModelReady(pb.ModelReadyRequest(name="ctr")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="ctr", version=version)).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="ctr", version="999")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready


def test_model_metadata(stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer) -> None:
    inputs = ctr_inputs(server.registry)
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="ctr"))
    assert (meta.name, meta.platform) == ("ctr", "onnxruntime_onnx")
    assert list(meta.versions) == [str(server.registry.get("ctr").id.version)]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("cat", "INT64", [-1, inputs["cat"].shape[1]]),
        ("num", "FP32", [-1, inputs["num"].shape[1]]),
    ]
    # The graph's [batch] tensors (pctr, and pcvr: training.cvr) show as [-1, 1], as Triton
    # shows them.
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("pctr", "FP32", [-1, 1]),
        ("pcvr", "FP32", [-1, 1]),
    ]
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="retrieval"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("user_index", "INT64", [-1, 1]),
        ("item_index", "INT64", [-1, 1]),
    ]


def test_model_config_strips_the_batch_axis(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    inputs = ctr_inputs(server.registry)
    config = stub.ModelConfig(pb.ModelConfigRequest(name="ctr")).config
    assert (config.name, config.platform, config.backend) == (
        "ctr",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert config.max_batch_size == server.settings.max_score_rows
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("cat", mc.TYPE_INT64, [inputs["cat"].shape[1]]),
        ("num", mc.TYPE_FP32, [inputs["num"].shape[1]]),
    ]
    # pctr (and pcvr, training.cvr) are [batch] in the graph: dims [1] and an empty reshape,
    # as Triton writes it.
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("pctr", mc.TYPE_FP32, [1]),
        ("pcvr", mc.TYPE_FP32, [1]),
    ]
    assert all(o.HasField("reshape") and list(o.reshape.shape) == [] for o in config.output)
    assert not any(i.HasField("reshape") for i in config.input)
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]


@pytest.mark.parametrize("model", ["ctr", "retrieval"])
def test_infer_raw_matches_onnxruntime(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer, model: str
) -> None:
    inputs = (ctr_inputs if model == "ctr" else retrieval_inputs)(server.registry)
    response = stub.ModelInfer(raw_request(model, inputs, id="req-7"))
    assert (response.model_name, response.id) == (model, "req-7")
    assert response.model_version == str(server.registry.get(model).id.version)
    assert not any(t.HasField("contents") for t in response.outputs)
    got = raw_outputs(response)
    want = {k: as_protocol(v) for k, v in reference(server.registry, model, inputs).items()}
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_batch_only_inputs_are_taken_as_metadata_shows_them(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    inputs = retrieval_inputs(server.registry)
    as_shown = {k: as_protocol(v) for k, v in inputs.items()}
    assert all(a.shape == (len(a), 1) for a in as_shown.values())
    shown = raw_outputs(stub.ModelInfer(raw_request("retrieval", as_shown)))
    native = raw_outputs(stub.ModelInfer(raw_request("retrieval", inputs)))
    assert list(shown) == list(native)
    for name in shown:
        np.testing.assert_array_equal(shown[name], native[name])


@pytest.mark.parametrize("model", ["ctr", "retrieval"])
def test_infer_typed_contents_matches_onnxruntime(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer, model: str
) -> None:
    inputs = (ctr_inputs if model == "ctr" else retrieval_inputs)(server.registry)
    response = stub.ModelInfer(typed_request(model, inputs))
    # A typed request gets a typed answer.
    assert len(response.raw_output_contents) == 0
    want = {k: as_protocol(v) for k, v in reference(server.registry, model, inputs).items()}
    assert [t.name for t in response.outputs] == list(want)
    for tensor in response.outputs:
        assert (tensor.datatype, list(tensor.shape)) == ("FP32", list(want[tensor.name].shape))
        got = np.array(tensor.contents.fp32_contents, dtype=np.float32).reshape(tensor.shape)
        np.testing.assert_allclose(got, want[tensor.name], rtol=1e-6, atol=1e-7)


def test_infer_answers_only_the_requested_outputs(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    inputs = ctr_inputs(server.registry, rows=3)
    request = raw_request(
        "ctr", inputs, outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="pctr")]
    )
    assert [t.name for t in stub.ModelInfer(request).outputs] == ["pctr"]
    request.outputs[0].name = "score"
    error = status_of(lambda: stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'score'" in error.details()


def _mutate(
    change: Callable[[pb.ModelInferRequest], None],
) -> Callable[[pb.ModelInferRequest], pb.ModelInferRequest]:
    def apply(request: pb.ModelInferRequest) -> pb.ModelInferRequest:
        change(request)
        return request

    return apply


def _set_shape(tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int]) -> None:
    tensor.ClearField("shape")
    tensor.shape.extend(shape)


def _as_fp64(request: pb.ModelInferRequest) -> None:
    request.inputs[1].datatype = "FP64"
    request.raw_input_contents[1] = (
        np.frombuffer(request.raw_input_contents[1], np.float32).astype(np.float64).tobytes()
    )


def _wrong_width(request: pb.ModelInferRequest) -> None:
    # Consistent shape and bytes, but fewer features per row than the graph takes.
    rows, width = request.inputs[0].shape
    _set_shape(request.inputs[0], [rows, width - 1])
    request.raw_input_contents[0] = request.raw_input_contents[0][: rows * (width - 1) * 8]


def _drop_num(request: pb.ModelInferRequest) -> None:
    del request.inputs[1]
    del request.raw_input_contents[1]


def _fewer_num_rows(request: pb.ModelInferRequest) -> None:
    rows, width = request.inputs[1].shape
    _set_shape(request.inputs[1], [rows - 1, width])
    request.raw_input_contents[1] = request.raw_input_contents[1][: (rows - 1) * width * 4]


def _out_of_range_ids(request: pb.ModelInferRequest) -> None:
    # Random int64s, as perf_analyzer sends by default: the embedding gather refuses them.
    rows, width = request.inputs[0].shape
    request.raw_input_contents[0] = np.full((rows, width), 1 << 60, np.int64).tobytes()


BAD_REQUESTS = {
    "unknown model": (
        _mutate(lambda r: setattr(r, "model_name", "nope")),
        grpc.StatusCode.NOT_FOUND,
        "'nope'",
    ),
    "unserved version": (
        _mutate(lambda r: setattr(r, "model_version", "999")),
        grpc.StatusCode.NOT_FOUND,
        "version 999",
    ),
    "non-numeric version": (
        _mutate(lambda r: setattr(r, "model_version", "latest")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'latest'",
    ),
    "raw length": (
        _mutate(lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-8])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'cat'",
    ),
    "unknown input": (
        _mutate(lambda r: setattr(r.inputs[0], "name", "kat")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'kat'",
    ),
    "missing input": (_mutate(_drop_num), grpc.StatusCode.INVALID_ARGUMENT, "'num'"),
    "wrong datatype": (_mutate(_as_fp64), grpc.StatusCode.INVALID_ARGUMENT, "input 'num'"),
    "unsupported datatype": (
        _mutate(lambda r: setattr(r.inputs[1], "datatype", "BYTES")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'num'",
    ),
    "wrong width": (_mutate(_wrong_width), grpc.StatusCode.INVALID_ARGUMENT, "input 'cat'"),
    "negative dim": (
        _mutate(lambda r: _set_shape(r.inputs[0], [-1, 8])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'cat'",
    ),
    "batch mismatch": (
        _mutate(_fewer_num_rows),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'num' has 3 rows",
    ),
    "raw and typed": (
        _mutate(lambda r: r.inputs[0].contents.int64_contents.append(1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'cat'",
    ),
    "out-of-range ids": (_mutate(_out_of_range_ids), grpc.StatusCode.INVALID_ARGUMENT, "ctr"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_precise_status_codes(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer, case: str
) -> None:
    mutate, code, fragment = BAD_REQUESTS[case]
    request = mutate(raw_request("ctr", ctr_inputs(server.registry, rows=4)))
    error = status_of(lambda: stub.ModelInfer(request))
    assert error.code() == code, error.details()
    assert fragment in error.details()


def test_bad_typed_request_names_the_input(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    request = typed_request("ctr", ctr_inputs(server.registry, rows=4))
    del request.inputs[1].contents.fp32_contents[-1]
    error = status_of(lambda: stub.ModelInfer(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'num'" in error.details() and "fp32_contents" in error.details()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.ModelMetadata(pb.ModelMetadataRequest(name="nope")),
        lambda s: s.ModelConfig(pb.ModelConfigRequest(name="nope")),
        lambda s: s.ModelStatistics(pb.ModelStatisticsRequest(name="nope")),
        lambda s: s.ModelConfig(pb.ModelConfigRequest(name="ctr", version="999")),
    ],
)
def test_unknown_models_are_not_found(
    stub: pb_grpc.GRPCInferenceServiceStub, call: Callable
) -> None:
    assert status_of(lambda: call(stub)).code() == grpc.StatusCode.NOT_FOUND


def test_statistics_count_successes_failures_and_rows(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    def stats() -> pb.ModelStatistics:
        (entry,) = stub.ModelStatistics(pb.ModelStatisticsRequest(name="ctr")).model_stats
        return entry

    before = stats()
    inputs = ctr_inputs(server.registry, rows=5)
    for _ in range(3):
        stub.ModelInfer(raw_request("ctr", inputs))
    bad = raw_request("ctr", inputs)
    bad.raw_input_contents[0] = b""
    status_of(lambda: stub.ModelInfer(bad))
    after = stats()
    assert after.version == str(server.registry.get("ctr").id.version)
    assert after.execution_count - before.execution_count == 3
    assert after.inference_count - before.inference_count == 15
    s, b = after.inference_stats, before.inference_stats
    assert s.success.count - b.success.count == 3
    assert s.fail.count - b.fail.count == 1
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert getattr(s, phase).count - getattr(b, phase).count == 3
        assert getattr(s, phase).ns > getattr(b, phase).ns
    # The phases happen inside the request, so they cannot add up to more than it took.
    spent = s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns
    assert spent <= s.success.ns
    assert after.last_inference >= before.last_inference > 0
    batch = {x.batch_size: x for x in after.batch_stats}
    assert batch[5].compute_infer.count >= 3


def test_statistics_of_every_model(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest()).model_stats
    assert sorted(s.name for s in stats) == onnx_models(server.registry)


def test_repository_index(stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer) -> None:
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest()).models
    ready = {m.name: m for m in index if m.state == "READY"}
    assert sorted(ready) == onnx_models(server.registry)
    assert ready["ctr"].version == str(server.registry.get("ctr").id.version)
    only_ready = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert all(m.state == "READY" for m in only_ready)
    error = status_of(
        lambda: stub.RepositoryIndex(pb.RepositoryIndexRequest(repository_name="other"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unload_then_load(stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer) -> None:
    inputs = retrieval_inputs(server.registry)
    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="retrieval"))
    try:
        assert not stub.ModelReady(pb.ModelReadyRequest(name="retrieval")).ready
        assert stub.ServerReady(pb.ServerReadyRequest()).ready  # ctr still serves
        error = status_of(lambda: stub.ModelInfer(raw_request("retrieval", inputs)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        index = {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest()).models}
        assert (index["retrieval"].state, index["retrieval"].reason) == ("UNAVAILABLE", "unloaded")
        # Unloading what is not loaded succeeds, as in Triton.
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="retrieval"))
    finally:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="retrieval"))
    assert stub.ModelReady(pb.ModelReadyRequest(name="retrieval")).ready
    assert len(stub.ModelInfer(raw_request("retrieval", inputs)).raw_output_contents) == 1


def test_server_is_not_ready_without_models(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    names = server.registry.names()
    try:
        for name in names:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name))
        assert not stub.ServerReady(pb.ServerReadyRequest()).ready
        assert stub.ServerLive(pb.ServerLiveRequest()).live
    finally:
        for name in names:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (
            lambda s: s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda s: s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="nope")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda s: s.RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(
                    model_name="ctr",
                    parameters={"config": pb.ModelRepositoryParameter(string_param="{}")},
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda s: s.TraceSetting(pb.TraceSettingRequest()), grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_repository_and_unoffered_rpcs(
    stub: pb_grpc.GRPCInferenceServiceStub, call: Callable, code: grpc.StatusCode
) -> None:
    assert status_of(lambda: call(stub)).code() == code


def test_reflection_lists_and_describes_the_service(server: RunningServer) -> None:
    """What `grpcurl list` and `grpcurl describe inference.GRPCInferenceService` ask."""
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService"
        ),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed, described = reflection.ServerReflectionInfo(iter(requests))
    names = {s.name for s in listed.list_services_response.service}
    assert "inference.GRPCInferenceService" in names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    # Triton's own file names, as tritonclient's generated code registers them.
    service = next(f for f in files if f.name == "grpc_service.proto")
    assert service.package == "inference" and "model_config.proto" in service.dependency
    methods = {m.name for m in service.service[0].method}
    assert {"ModelInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex"} <= methods


def test_infer_refuses_more_rows_than_allowed(server: RunningServer) -> None:
    request = raw_request("ctr", ctr_inputs(server.registry, rows=3))
    with pytest.raises(InvalidArgument, match="input 'cat' has 3 rows, more than 2"):
        infer(server.registry.get("ctr"), request, max_rows=2)
    response, timing = infer(server.registry.get("ctr"), request, max_rows=3)
    # One raw output per graph output: pctr and pcvr (training.cvr).
    assert timing.batch_size == 3 and len(response.raw_output_contents) == 2
    assert timing.total_ns >= timing.input_ns + timing.infer_ns + timing.output_ns


def test_every_onnx_model_has_metadata_and_config(
    stub: pb_grpc.GRPCInferenceServiceStub, server: RunningServer
) -> None:
    for name in onnx_models(server.registry):
        meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=name))
        config = stub.ModelConfig(pb.ModelConfigRequest(name=name)).config
        assert [t.name for t in meta.inputs] == [i.name for i in config.input], name
        assert all(t.shape[0] == -1 for t in meta.inputs), name
        assert config.max_batch_size > 0, name
        assert [list(t.shape[1:]) for t in meta.inputs] == [list(i.dims) for i in config.input]
