"""The async SDK, `run_load` and `reachrank loadtest` against the real server (not the fakes):
the async client answers exactly what the sync one does, and every generated request, the
KServe v2 builder's and the multi-process generator's included, is one the server accepts
and counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from clients import AsyncReachRankClient, ReachRankClient
from clients.channel import open_aio_channel
from clients.cli import main
from clients.latency import Summary
from clients.loadtest import LoadSettings, run_load
from clients.options import ClientOptions
from clients.workload import (
    MixSettings,
    Workload,
    kserve_workload,
    rank_ads_workload,
    recommend_workload,
    synthetic_ids,
)
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.kserve_helpers import ctr_inputs

ADS = [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 2.5}, {"ad_id": "i7", "bid": 0.4}]


@pytest.fixture(scope="module")
def server(trained_repo: Path) -> Iterator[RunningServer]:
    running = start_server(Settings(repo=trained_repo, host="127.0.0.1", port=0))
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def target(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def answered(rpc: str) -> float:
    """RPCs the server answered OK so far (its own Prometheus counter)."""
    value = REGISTRY.get_sample_value(
        "reachrank_requests_total", {"rpc": rpc, "code": "OK", "variant": ""}
    )
    return value or 0.0


def test_async_client_answers_what_the_sync_client_does(target: str) -> None:
    async def scenario():
        async with AsyncReachRankClient(target, timeout=60.0) as sdk:
            await sdk.wait_ready(timeout=60.0)
            return (
                await sdk.recommend("u3", 5, context={"device": "web"}),
                await sdk.rank_ads("u3", ADS, slots=2, all_ranked=True),
                await sdk.similar_items("i1", 4),
                await sdk.profile("u3"),
                await sdk.health(),
                await asyncio.gather(*(sdk.recommend(f"u{i}", 3) for i in range(20))),
            )

    rec, auction, similar, profile, health, many = asyncio.run(scenario())
    with ReachRankClient(target, ClientOptions(timeout=60.0)) as sync:
        want_rec = sync.recommend("u3", 5, context={"device": "web"})
        assert [(i.item_id, i.score, i.retrieval_score) for i in rec.items] == [
            (i.item_id, i.score, i.retrieval_score) for i in want_rec.items
        ]
        assert rec.strategy == want_rec.strategy and rec.models == want_rec.models
        want_auction = sync.rank_ads("u3", ADS, slots=2, all_ranked=True)
        assert auction.ads == want_auction.ads and auction.models == want_auction.models
        # The real server's GSP: each winner pays the next ad's expected value over its pCTR.
        for w, nxt in zip(auction.winners, auction.ads[1:], strict=False):
            assert w.price == pytest.approx(min(w.bid, nxt.expected_value / w.pctr), rel=1e-6)
        assert similar.items == sync.similar_items("i1", 4).items
        assert profile == sync.profile("u3")
        assert health == "SERVING"
        for i, got in enumerate(many):  # concurrent calls on one channel: each its own answer
            assert got.item_ids == sync.recommend(f"u{i}", 3).item_ids


def _run(target: str, workload: Workload, settings: LoadSettings) -> Summary:
    async def scenario() -> Summary:
        channel = open_aio_channel(target, ClientOptions(timeout=60.0))
        try:
            await channel.channel_ready()
            summary, _ = await run_load(channel, workload, settings)
            return summary
        finally:
            await channel.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["recommend", "rank-ads", "kserve"])
def test_run_load_requests_are_accepted_by_the_real_server(
    server: RunningServer, target: str, kind: str
) -> None:
    users, items = synthetic_ids("u", 300), synthetic_ids("i", 120)  # the simulator's ids
    mix = MixSettings(k=5, pool_size=64)
    workload, rpc = {
        "recommend": (lambda: recommend_workload(users, mix), "Recommend"),
        "rank-ads": (lambda: rank_ads_workload(users, items, mix), "RankAds"),
        "kserve": (lambda: kserve_workload("ctr", ctr_inputs(server.registry, 8)), "ModelInfer"),
    }[kind]
    before = answered(rpc)
    summary = _run(target, workload(), LoadSettings(duration=1.0, concurrency=4, timeout=60.0))
    assert summary.errors == {}, summary.errors
    assert summary.ok == summary.requests > 0
    assert answered(rpc) - before >= summary.ok  # the server itself answered every one OK


@pytest.mark.slow
def test_loadtest_command_in_two_processes_against_the_real_server(
    server: RunningServer, target: str, tmp_path: Path
) -> None:
    inputs = ctr_inputs(server.registry, 4)
    paths = []
    for name, array in inputs.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        paths += ["--input", f"{name}={path}"]
    for rpc, method, extra in (
        ("rank-ads", "RankAds", ["--users", "300", "--items", "120"]),
        ("kserve", "ModelInfer", ["--model", "ctr", *paths]),
    ):
        before = answered(method)
        out = tmp_path / f"{rpc}.json"
        result = CliRunner().invoke(
            main,
            [
                "loadtest", "--target", target, "--rpc", rpc, "--concurrency", "4",
                "--processes", "2", "--duration", "1", "--warmup", "0", "--quiet",
                "--timeout", "60", "--json", str(out), *extra,
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        payload = json.loads(out.read_text())
        assert payload["errors"] == {}, payload["errors"]
        assert payload["requests"] > 0 and payload["ok"] == payload["requests"]
        assert answered(method) - before >= payload["ok"]
