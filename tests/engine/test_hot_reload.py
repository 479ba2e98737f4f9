"""Hot reload: versions swap under steady load with zero failed requests; failed loads keep
the old version; the repository poller picks up new versions; Unload/Load by RPC."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import models_pb2, models_pb2_grpc

from clients import ReachRankClient
from clients.errors import ReachRankError
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.version_helpers import add_version, unscaled
from tests.threads import Workers


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


ADS = [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 2.0}]


def _versions(models) -> dict[str, int]:
    return {m.name: m.version for m in models}


def test_swaps_under_load_lose_nothing_and_score_with_the_version_named(
    live: RunningServer, repo: Path
) -> None:
    """Each version scores differently (tests.engine.version_helpers): every answer under load
    must carry the scores of the very version it names, so a server that names the new version
    while scoring with the old session (or the reverse) fails."""
    with ReachRankClient(f"127.0.0.1:{live.port}") as client:
        ref_rec = client.recommend("u3", k=5, timeout=30)
        ref_auction = client.rank_ads("u3", ADS, all_ranked=True, timeout=30)
    assert _versions(ref_rec.models) == {"retrieval": 1, "ctr": 1}
    ref_items = {i.item_id: (i.score, i.retrieval_score) for i in ref_rec.items}
    ref_pctr = {a.ad_id: a.pctr for a in ref_auction.ads}

    stop = threading.Event()
    seen: set[tuple[str, int]] = set()
    seen_changed = threading.Condition()
    warm = threading.Barrier(5)  # four load threads and the test: all have served one call

    def load() -> None:
        try:
            serve_load()
        except BaseException:
            warm.abort()  # the test thread stops waiting and the join reports the failure
            with seen_changed:
                seen_changed.notify_all()
            raise

    def serve_load() -> None:
        with ReachRankClient(f"127.0.0.1:{live.port}") as client:
            first = True
            while not stop.is_set():
                rec = client.recommend("u3", k=5, timeout=60)
                auction = client.rank_ads("u3", ADS, all_ranked=True, timeout=60)
                rec_v, ad_v = _versions(rec.models), _versions(auction.models)
                assert [i.item_id for i in rec.items] == ref_rec.item_ids
                for item in rec.items:
                    score, retrieval_score = ref_items[item.item_id]
                    assert unscaled(item.score, rec_v["ctr"]) == pytest.approx(score, rel=1e-4)
                    assert unscaled(item.retrieval_score, rec_v["retrieval"]) == pytest.approx(
                        retrieval_score, rel=1e-4, abs=1e-7
                    )
                for ad in auction.ads:
                    assert unscaled(ad.pctr, ad_v["ctr"]) == pytest.approx(
                        ref_pctr[ad.ad_id], rel=1e-4
                    )
                with seen_changed:
                    seen.update({("ctr", ad_v["ctr"]), *rec_v.items()})
                    seen_changed.notify_all()
                if first:
                    warm.wait(60)
                    first = False

    def wait_seen(name: str, version: int) -> None:
        with seen_changed:
            found = seen_changed.wait_for(
                lambda: (name, version) in seen or workers.errors, timeout=120
            )
            workers.raise_errors()
            assert found, f"no answer from {name} version {version} under load"

    stub = models_stub(live)
    with Workers() as workers:
        for _ in range(4):
            workers.start(load)
        try:
            warm.wait(120)
            for version in range(2, 6):
                for name in ("ctr", "retrieval"):
                    add_version(repo, name, version)
                    reply = stub.Load(models_pb2.LoadModelRequest(name=name), timeout=60)
                    assert reply.model.version == version and reply.model.state == "SERVING"
                    wait_seen(name, version)  # traffic reached it before the next swap
        finally:
            stop.set()
    assert {("ctr", v) for v in range(1, 6)} <= seen
    assert {("retrieval", v) for v in range(1, 6)} <= seen


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


def _wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    """Deadline-bounded polling of server state that has no event to wait on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_poller_picks_up_new_versions_and_tries_a_bad_one_once(repo: Path) -> None:
    running = start_server(Settings(repo=repo, port=0, repo_poll_interval_s=0.05))
    try:
        add_version(repo, "retrieval", 2)
        _wait_for(lambda: running.registry.get("retrieval").id.version == 2, "no version 2")
        add_version(repo, "retrieval", 3, damage=True)

        def failures() -> list:
            return [e for e in running.registry.events if e.name == "retrieval" and not e.ok]

        _wait_for(lambda: failures(), "the poller never tried version 3")
        # Many more polls happen while the poller loads a good version of another model.
        add_version(repo, "ctr", 2)
        _wait_for(lambda: running.registry.get("ctr").id.version == 2, "no ctr version 2")
        polls = len(running.registry.events)
        add_version(repo, "ctr", 3)
        _wait_for(lambda: running.registry.get("ctr").id.version == 3, "no ctr version 3")
        assert len(running.registry.events) > polls
        assert len(failures()) == 1  # refused once, never retried
        assert running.registry.get("retrieval").id.version == 2
        add_version(repo, "retrieval", 4)  # a newer version is tried
        _wait_for(lambda: running.registry.get("retrieval").id.version == 4, "no version 4")
    finally:
        running.stop(0)


def test_a_version_refused_by_rpc_is_not_retried_by_the_poll(
    live: RunningServer, repo: Path
) -> None:
    stub = models_stub(live)
    add_version(repo, "ctr", 2, damage=True)
    with pytest.raises(grpc.RpcError):
        stub.Load(models_pb2.LoadModelRequest(name="ctr"), timeout=60)
    tried = len(live.registry.events)
    for _ in range(3):
        assert live.registry.refresh() == []
    assert len(live.registry.events) == tried  # no second attempt at the refused version
    assert live.registry.get("ctr").id.version == 1
