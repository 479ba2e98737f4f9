"""Shadow models on a real server: a candidate CTR version scores sampled live requests off the
request path and its scores are logged beside the served ones, never served; a full queue
drops (counted) instead of holding requests."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import polars as pl
import pytest
from reachrank.v1 import models_pb2, models_pb2_grpc, shadow_pb2

from clients import ReachRankClient
from clients.ads import AdsClient, BidAd
from engine.feedback.records import scan
from engine.feedback.segments import segments
from engine.server import RunningServer, start_server
from engine.settings import Settings
from engine.shadow import ShadowRunner, write_shadow_parquet
from tests.engine.version_helpers import add_version, scale

ADS = [{"ad_id": f"i{i}", "bid": 1.0 + i / 10} for i in range(6)]
QUEUE = 64


@pytest.fixture(scope="module")
def shadowed(
    tmp_path_factory: pytest.TempPathFactory, trained_repo: Path
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("shadow")
    repo = root / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)  # the candidate: its scores are half of version 1's
    running = start_server(
        Settings(
            repo=repo,
            port=0,
            shadow_log_dir=root / "shadow-log",
            shadow_max_pending=QUEUE,
            shadow_seed=5,
        )
    )
    running.registry.load("ctr", 1)  # version 1 serves
    yield running
    running.stop(0)


def _runner(server: RunningServer) -> ShadowRunner:
    runner = server.extras.experiments.shadows
    assert runner is not None
    return runner


@contextmanager
def _experiment(server: RunningServer, name: str, sample_rate: float) -> Iterator[None]:
    """One experiment at a time (the first active one by name takes every user)."""
    stub = models_pb2_grpc.ExperimentsStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    stub.Set(
        models_pb2.Experiment(
            name=name,
            rpcs=["rank_ads", "recommend"],
            enabled=True,
            variants=[models_pb2.Variant(name="control", weight=1, ctr_version=1)],
            shadows=[models_pb2.Shadow(name=f"{name}-v2", ctr_version=2, sample_rate=sample_rate)],
        )
    )
    try:
        yield
    finally:
        stub.Delete(models_pb2.DeleteExperimentRequest(name=name))


def _logged(server: RunningServer, shadow: str) -> list[shadow_pb2.ShadowScores]:
    _runner(server).drain()
    records = []
    for path in segments(server.settings.shadow_log_dir).values():
        records += [shadow_pb2.ShadowScores.FromString(p) for p in scan(path.read_bytes()).payloads]
    return [r for r in records if r.shadow == shadow]


def test_the_shadow_scores_live_requests_and_is_never_served(
    shadowed: RunningServer, tmp_path: Path
) -> None:
    answers = {}
    address = f"127.0.0.1:{shadowed.port}"
    with _experiment(shadowed, "cand", 1.0), ReachRankClient(address, timeout=10) as client:
        for i in range(12):
            auction = client.rank_ads(f"u{i}", ADS, slots=2)
            shown = client.recommend(f"u{i}", k=4)
            for answer in (auction, shown):
                assert (answer.variant, answer.models[-1].version) == ("control", 1)
                answers[answer.request_id] = answer
    records = _logged(shadowed, "cand-v2")
    assert len(records) == 24 and {r.request_id for r in records} == set(answers)
    half = scale(2) / scale(1)
    for r in records:
        assert (r.served_model.version, r.shadow_model.version) == (1, 2)
        assert r.experiment == "cand" and r.variant == "control" and r.shadow_ms > 0
        served = np.array(r.served_scores)
        shadow = np.array(r.shadow_scores)
        shown = ~np.isnan(served)
        if r.rpc == "rank_ads":
            assert len(r.item_ids) == len(ADS) and shown.sum() == 2  # winners served
            answer = answers[r.request_id]
            assert [a.ad_id for a in answer.ads] == [
                r.item_ids[i] for i in np.argsort(r.served_positions) if r.served_positions[i]
            ]
        else:
            assert list(r.item_ids) == [item.item_id for item in answers[r.request_id].items]
        np.testing.assert_allclose(shadow[shown], served[shown] * half, rtol=1e-5)
        # Half the scores rank alike: the shadow would have shown the same.
        assert list(r.shadow_positions) == list(r.served_positions)
    # The log's Parquet form: one row per candidate.
    path = tmp_path / "shadow.parquet"
    rows = write_shadow_parquet([r.SerializeToString() for r in records], path)
    frame = pl.read_parquet(path)
    assert rows == frame.height == sum(len(r.item_ids) for r in records)
    assert set(frame["shadow_version"].unique()) == {2}


def test_the_shadow_auction_prices_each_ad_by_its_bid_type(shadowed: RunningServer) -> None:
    """A CPM ad bidding 10 (0.01 per impression) loses to the CPC ads served and in the
    shadow's auction; read as CPC (10 x pCTR) it would win the shadow's first slot."""
    ads = [BidAd("i0", 10.0, "cpm"), *(BidAd(a["ad_id"], a["bid"]) for a in ADS[1:])]
    address = f"127.0.0.1:{shadowed.port}"
    with _experiment(shadowed, "types", 1.0), ReachRankClient(address, timeout=10) as client:
        served = AdsClient(client).rank_ads("t0", ads, slots=2)
    assert "i0" not in [a.ad_id for a in served.winners]
    (record,) = _logged(shadowed, "types-v2")
    at = list(record.item_ids).index("i0")
    assert record.served_positions[at] == 0 and record.shadow_positions[at] == 0
    assert list(record.shadow_positions) == list(record.served_positions)


def test_only_the_sampled_share_is_shadowed(shadowed: RunningServer) -> None:
    address = f"127.0.0.1:{shadowed.port}"
    with _experiment(shadowed, "sampled", 0.25), ReachRankClient(address, timeout=10) as client:
        for i in range(160):
            client.rank_ads(f"s{i}", ADS)
    logged = len(_logged(shadowed, "sampled-v2"))
    assert 20 <= logged <= 60  # Binomial(160, 0.25): mean 40, sd 5.5


def test_a_full_queue_drops_instead_of_holding_requests(shadowed: RunningServer) -> None:
    calls = QUEUE + 21
    runner = _runner(shadowed)
    release, scoring = threading.Event(), threading.Event()
    score = runner.score

    def stuck(job: object) -> shadow_pb2.ShadowScores:
        scoring.set()
        assert release.wait(60)
        return score(job)

    runner.score = stuck  # type: ignore[method-assign]
    before = (runner.scored, runner.dropped, runner.failed)
    address = f"127.0.0.1:{shadowed.port}"
    try:
        with (
            _experiment(shadowed, "blocked", 1.0),
            ReachRankClient(address, timeout=10) as client,
        ):
            client.rank_ads("b0", ADS)
            assert scoring.wait(30)  # the worker holds a request and waits
            for i in range(1, calls):  # answered while the shadow cannot score anything
                assert client.rank_ads(f"b{i}", ADS).models[0].version == 1
        # The worker holds one (or the few it took at once), the queue QUEUE, the rest drop.
        assert runner.dropped - before[1] >= calls - QUEUE - 5
    finally:
        release.set()
        runner.drain()
        runner.score = score  # type: ignore[method-assign]
    scored, dropped, failed = (
        runner.scored - before[0],
        runner.dropped - before[1],
        runner.failed - before[2],
    )
    assert failed == 0 and scored + dropped == calls
    assert scored == len(_logged(shadowed, "blocked-v2"))


def test_a_shadow_of_a_missing_version_is_refused(shadowed: RunningServer) -> None:
    stub = models_pb2_grpc.ExperimentsStub(grpc.insecure_channel(f"127.0.0.1:{shadowed.port}"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Set(
            models_pb2.Experiment(
                name="missing",
                rpcs=["rank_ads"],
                enabled=True,
                variants=[models_pb2.Variant(name="control", weight=1)],
                shadows=[models_pb2.Shadow(name="v9", ctr_version=9, sample_rate=1)],
            )
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "shadows[0].ctr_model" in caught.value.details()
        and "no version 9" in caught.value.details()
    )
