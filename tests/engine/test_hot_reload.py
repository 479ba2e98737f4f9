"""Hot reload: versions swap under steady load with zero failed requests; failed loads keep
the old version; the repository poller picks up new versions; Unload/Load by RPC."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from reachrank.v1 import models_pb2, models_pb2_grpc

from clients import ReachRankClient
from clients.errors import ReachRankError
from engine.server import RunningServer, start_server
from engine.settings import Settings


def add_version(repo: Path, name: str, version: int, damage: bool = False) -> Path:
    """Copy version 1 of ``name`` as ``version`` (written aside and renamed, like the trainer)."""
    tmp = repo / name / f".incoming-{version}"
    shutil.copytree(repo / name / "1", tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["version"] = version
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if damage:
        (tmp / "model.onnx").write_bytes(b"\x00garbage")
    tmp.rename(repo / name / str(version))
    return repo / name / str(version)


@pytest.fixture
def repo(tmp_path: Path, trained_repo: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(trained_repo, copy)
    return copy


@pytest.fixture
def live(repo: Path) -> Iterator[RunningServer]:
    running = start_server(
        Settings(repo=repo, port=0, grace_period_s=1.0, repo_poll_interval_s=0.0)
    )
    yield running
    running.stop(0)


def models_stub(server: RunningServer) -> models_pb2_grpc.ModelServiceStub:
    return models_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


def test_swaps_under_load_lose_nothing(live: RunningServer, repo: Path) -> None:
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[str] = []
    ctr_versions: set[int] = set()

    def load() -> None:
        with ReachRankClient(f"127.0.0.1:{live.port}") as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    rec = client.recommend("u3", k=5, timeout=10)
                    auction = client.rank_ads(
                        "u3", [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 2.0}], timeout=10
                    )
                    ctr_versions.add(auction.models[0].version)
                    assert rec.items
                except (ReachRankError, AssertionError) as exc:
                    errors.append(repr(exc))
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    stub = models_stub(live)
    time.sleep(0.3)
    for version in range(2, 6):
        for name in ("ctr", "retrieval"):
            add_version(repo, name, version)
            reply = stub.Load(models_pb2.LoadModelRequest(name=name), timeout=60)
            assert reply.model.version == version and reply.model.state == "SERVING"
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert {1, 5} <= ctr_versions  # traffic saw the first and the last version
    p99 = float(np.percentile(latencies, 99))
    assert p99 < 5.0, f"p99 {p99:.3f} s during swaps"  # bounded: no request waits for a load


def test_failed_load_keeps_serving_and_reports_why(live: RunningServer, repo: Path) -> None:
    stub = models_stub(live)
    add_version(repo, "ctr", 2, damage=True)
    with pytest.raises(grpc.RpcError) as err:
        stub.Load(models_pb2.LoadModelRequest(name="ctr"), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "serving version stays" in err.value.details()
    status = {m.name: m for m in stub.List(models_pb2.ListModelsRequest()).models}["ctr"]
    assert status.version == 1 and status.state == "SERVING"
    assert list(status.available_versions) == [1, 2]
    assert "ONNX" in status.last_error
    with ReachRankClient(f"127.0.0.1:{live.port}") as client:
        assert client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}]).models[0].version == 1


def test_unload_then_load_and_pinning(live: RunningServer, repo: Path) -> None:
    stub = models_stub(live)
    with ReachRankClient(f"127.0.0.1:{live.port}") as client:
        stub.Unload(models_pb2.UnloadModelRequest(name="ctr"))
        with pytest.raises(ReachRankError) as err:
            client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}])
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        # Recommend still answers, ordered by retrieval score without the CTR model.
        assert [m.name for m in client.recommend("u1", k=3).models] == ["retrieval"]
        add_version(repo, "ctr", 2)
        reply = stub.Load(models_pb2.LoadModelRequest(name="ctr", version=1))
        assert reply.model.version == 1 and reply.model.policy == "pinned:1"
        assert live.registry.refresh() == []  # pinned: a newer version on disk is ignored
        reply = stub.Load(models_pb2.LoadModelRequest(name="ctr", version=2))
        assert reply.model.version == 2
    with pytest.raises(grpc.RpcError) as err:
        stub.Load(models_pb2.LoadModelRequest(name="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_poller_picks_up_new_versions(repo: Path) -> None:
    running = start_server(Settings(repo=repo, port=0, repo_poll_interval_s=0.1))
    try:
        add_version(repo, "retrieval", 2)
        deadline = time.monotonic() + 30
        while running.registry.get("retrieval").id.version != 2:
            assert time.monotonic() < deadline, "poller did not load version 2"
            time.sleep(0.05)
        add_version(repo, "retrieval", 3, damage=True)
        time.sleep(0.5)
        assert running.registry.get("retrieval").id.version == 2  # bad version refused once
        assert running.registry.events[-1].ok is False
    finally:
        running.stop(0)
