"""ModelInfer's planned fast path (engine.kserve.fast): it answers what tritonclient and
perf_analyzer send, byte for byte as the general path would, and declines everything else
before the model runs, so the general path's answers and errors stay as they were."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from reachrank.kserve.v2 import grpc_service_pb2 as pb

from engine.kserve import fast, servicer
from engine.kserve.fast import fast_infer, plan_of
from engine.kserve.infer import infer
from engine.registry import ModelRegistry
from engine.server import RunningServer
from engine.settings import Settings
from tests.engine.kserve_helpers import (
    as_protocol,
    ctr_inputs,
    open_stub,
    raw_request,
    reference,
    retrieval_inputs,
)

MAX_ROWS = 4096
Requested = pb.ModelInferRequest.InferRequestedOutputTensor


@pytest.fixture(scope="module")
def registry(trained_repo: Path) -> Iterator[ModelRegistry]:
    registry = ModelRegistry(Settings(repo=trained_repo))
    registry.load_all()
    yield registry
    for name in registry.names():
        registry.unload(name)


def inputs_of(registry: ModelRegistry, model: str, rows: int = 5) -> dict[str, np.ndarray]:
    return (ctr_inputs if model == "ctr" else retrieval_inputs)(registry, rows)


@pytest.mark.parametrize("model", ["ctr", "retrieval"])
@pytest.mark.parametrize("shown", [False, True], ids=["graph-shape", "metadata-shape"])
@pytest.mark.parametrize("outputs", [(), ("first",)], ids=["all-outputs", "one-output"])
def test_fast_path_answers_as_the_general_path(
    registry: ModelRegistry, model: str, shown: bool, outputs: tuple[str, ...]
) -> None:
    served = registry.get(model)
    inputs = inputs_of(registry, model)
    if shown:  # [batch] inputs as ModelMetadata shows them, [batch, 1]
        inputs = {k: as_protocol(v) for k, v in inputs.items()}
    wanted = [Requested(name=served.outputs[0])] if outputs else []
    request = raw_request(model, inputs, id="r-1", outputs=wanted)
    answered = fast_infer(served, request, MAX_ROWS)
    assert answered is not None
    response, timing = answered
    general, _ = infer(served, request, MAX_ROWS)
    assert response.SerializeToString() == general.SerializeToString()
    assert timing.batch_size == 5
    assert 0 < timing.infer_ns <= timing.total_ns
    want = reference(registry, model, inputs_of(registry, model))
    for tensor, data in zip(response.outputs, response.raw_output_contents, strict=True):
        got = np.frombuffer(data, dtype=np.float32).reshape(tensor.shape)
        np.testing.assert_allclose(got, as_protocol(want[tensor.name]), rtol=1e-6, atol=1e-7)


def _typed(request: pb.ModelInferRequest, output: str) -> None:
    request.inputs[0].contents.int64_contents.append(1)


def _shm(request: pb.ModelInferRequest, output: str) -> None:
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"


def _short(request: pb.ModelInferRequest, output: str) -> None:
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]


def _rename(request: pb.ModelInferRequest, output: str) -> None:
    request.inputs[0].name = "nope"


def _datatype(request: pb.ModelInferRequest, output: str) -> None:
    request.inputs[0].datatype = "INT32"


def _rows(request: pb.ModelInferRequest, output: str) -> None:
    request.inputs[1].shape[0] = 4
    request.raw_input_contents[1] = request.raw_input_contents[1][: 4 * 8]


def _missing_raw(request: pb.ModelInferRequest, output: str) -> None:
    del request.raw_input_contents[1]


def _unknown_output(request: pb.ModelInferRequest, output: str) -> None:
    request.outputs.add(name=output + "-not")


def _twice(request: pb.ModelInferRequest, output: str) -> None:
    request.outputs.add(name=output)
    request.outputs.add(name=output)


def _shm_output(request: pb.ModelInferRequest, output: str) -> None:
    request.outputs.add(name=output).parameters["shared_memory_region"].string_param = "r"


DECLINED: dict[str, Callable[[pb.ModelInferRequest, str], None]] = {
    "typed contents too": _typed,
    "shared memory input": _shm,
    "wrong byte count": _short,
    "unknown input": _rename,
    "other datatype": _datatype,
    "rows disagree": _rows,
    "raw contents missing": _missing_raw,
    "unknown output": _unknown_output,
    "output asked twice": _twice,
    "output in shared memory": _shm_output,
}


@pytest.mark.parametrize("change", DECLINED.values(), ids=DECLINED.keys())
def test_fast_path_declines_before_running_the_model(
    registry: ModelRegistry, change: Callable[[pb.ModelInferRequest, str], None]
) -> None:
    served = registry.get("retrieval")
    request = raw_request("retrieval", inputs_of(registry, "retrieval"))
    change(request, served.outputs[0])
    ran = []
    original = served.run
    served.run = lambda inputs: ran.append(inputs) or original(inputs)  # type: ignore[method-assign]
    try:
        assert fast_infer(served, request, MAX_ROWS) is None
    finally:
        del served.run
    assert ran == []


def test_fast_path_declines_typed_requests_and_too_many_rows(registry: ModelRegistry) -> None:
    served = registry.get("ctr")
    inputs = inputs_of(registry, "ctr")
    tensor = pb.ModelInferRequest.InferInputTensor
    typed = pb.ModelInferRequest(
        model_name="ctr",
        inputs=[
            tensor(name="cat", datatype="INT64", shape=inputs["cat"].shape),
            tensor(name="num", datatype="FP32", shape=inputs["num"].shape),
        ],
    )
    assert fast_infer(served, typed, MAX_ROWS) is None
    assert fast_infer(served, raw_request("ctr", inputs), len(inputs["cat"]) - 1) is None
    assert fast_infer(served, raw_request("ctr", inputs), len(inputs["cat"])) is not None


def test_the_plan_belongs_to_the_model_object(registry: ModelRegistry) -> None:
    served = registry.get("ctr")
    plan = plan_of(served)
    assert plan is not None and plan is plan_of(served)
    assert plan.model_version == str(served.id.version)
    assert served in fast._PLANS


def test_the_server_answers_raw_requests_on_the_fast_path(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through gRPC: a raw request never reaches the general path; a typed one does."""
    general = []

    def counted(*args: object) -> object:
        general.append(args)
        return infer(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(servicer, "infer", counted)
    inputs = ctr_inputs(server.registry, rows=3)
    with open_stub(server.port) as stub:
        response = stub.ModelInfer(raw_request("ctr", inputs))
        assert general == []
        assert [t.name for t in response.outputs] == server.registry.get("ctr").outputs
        typed = raw_request("ctr", inputs)
        del typed.raw_input_contents[:]
        for t, array in zip(typed.inputs, inputs.values(), strict=True):
            field = "int64_contents" if array.dtype == np.int64 else "fp32_contents"
            getattr(t.contents, field).extend(array.ravel().tolist())
        stub.ModelInfer(typed)
        assert len(general) == 1
