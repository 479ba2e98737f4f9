"""Model versions and non-ONNX kinds through the protocol, on a private copy of the test
repository where `ctr` has versions 1 and 2: the serving version, an extra loaded version (as
an experiment keeps one), per-version statistics and index rows."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from reachrank.kserve.v2 import grpc_service_pb2_grpc as pb_grpc

from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.kserve_helpers import ctr_inputs, open_stub, raw_request
from tests.engine.version_helpers import add_version, unscaled


@pytest.fixture(scope="module")
def two_versions(
    trained_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("versions") / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)  # scores half of version 1's (tests.engine.version_helpers)
    running = start_server(Settings(repo=repo, host="127.0.0.1", port=0, grace_period_s=1.0))
    running.registry.load_version("ctr", 1)
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def stub(two_versions: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with open_stub(two_versions.port) as opened:
        yield opened


def _infer(
    stub: pb_grpc.GRPCInferenceServiceStub, inputs: dict[str, np.ndarray], version: str
) -> pb.ModelInferResponse:
    return stub.ModelInfer(raw_request("ctr", inputs, model_version=version))


def test_each_loaded_version_answers(
    stub: pb_grpc.GRPCInferenceServiceStub, two_versions: RunningServer
) -> None:
    inputs = ctr_inputs(two_versions.registry, rows=4)
    # Each version's own graph answers: its scores, not only its number.
    reference = {
        v: ort.InferenceSession(
            str(two_versions.registry.settings.repo / "ctr" / str(v) / "model.onnx")
        )
        for v in (1, 2)
    }
    v1 = reference[1].run(["pctr"], inputs)[0]
    for asked, version in (("", 2), ("1", 1), ("2", 2)):  # "": the serving (latest) version
        reply = _infer(stub, inputs, asked)
        assert reply.model_version == str(version)
        pctr = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
        np.testing.assert_allclose(pctr, reference[version].run(["pctr"], inputs)[0], rtol=1e-6)
        np.testing.assert_allclose(unscaled(pctr, version), v1, rtol=1e-5)
    assert stub.ModelReady(pb.ModelReadyRequest(name="ctr", version="1")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="ctr", version="3")).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="ctr"))
    assert list(meta.versions) == ["1", "2"]


def test_statistics_and_index_per_version(
    stub: pb_grpc.GRPCInferenceServiceStub, two_versions: RunningServer
) -> None:
    inputs = ctr_inputs(two_versions.registry, rows=4)
    _infer(stub, inputs, "1")
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="ctr", version="1")).model_stats
    assert [(s.name, s.version) for s in stats] == [("ctr", "1")]
    assert stats[0].execution_count >= 1
    every = {
        (s.name, s.version) for s in stub.ModelStatistics(pb.ModelStatisticsRequest()).model_stats
    }
    assert {("ctr", "1"), ("ctr", "2"), ("retrieval", "1")} <= every
    rows = [
        (m.name, m.version, m.state)
        for m in stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    ]
    assert ("ctr", "1", "READY") in rows and ("ctr", "2", "READY") in rows


def test_models_without_a_graph_are_not_served_over_the_protocol(
    stub: pb_grpc.GRPCInferenceServiceStub, two_versions: RunningServer
) -> None:
    assert two_versions.registry.find("profiles") is not None  # served by ReachRank's own RPCs
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="profiles"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "ONNX" in caught.value.details()
    assert not stub.ModelReady(pb.ModelReadyRequest(name="profiles")).ready
    index = {m.name: m for m in stub.RepositoryIndex(pb.RepositoryIndexRequest()).models}
    assert index["profiles"].state == "UNAVAILABLE" and "own RPCs" in index["profiles"].reason
    every = {s.name for s in stub.ModelStatistics(pb.ModelStatisticsRequest()).model_stats}
    assert "profiles" not in every
