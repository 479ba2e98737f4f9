"""Two servers over one Redis state store share campaign spend, pacing and frequency caps: a
budget spent through either stops both at once, and a cap holds across them under concurrent
requests (engine.state.ad_spend / freq_caps, Redis backing, through the real servers)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from reachrank.v1 import ad_campaigns_pb2

from bench.replica_bed import RedisServer
from clients import ReachRankClient
from clients.ads import AdsClient, BidAd
from engine.ads.campaigns import CampaignFile
from engine.server import RunningServer, start_server
from engine.settings import Settings

Campaign = ad_campaigns_pb2.AdCampaign
Cap = ad_campaigns_pb2.FrequencyCap
T0 = int(dt.datetime(2026, 4, 1, 9, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def pair(
    trained_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AdsClient, AdsClient]]:
    work = tmp_path_factory.mktemp("ad-replicas")
    redis = RedisServer(work / "redis")
    redis.start()
    campaigns = work / "campaigns.json"
    # Both servers read the same campaigns file at start.
    CampaignFile(campaigns).write(
        [
            Campaign(campaign_id="r1", advertiser="a", daily_budget=0.999, ad_ids=["ra"],
                     pacing=Campaign.PACING_ASAP),
            Campaign(campaign_id="r2", advertiser="b", daily_budget=1e6, ad_ids=["rb"],
                     pacing=Campaign.PACING_ASAP),
            Campaign(campaign_id="r3", advertiser="c", daily_budget=1e6, ad_ids=["rc"],
                     pacing=Campaign.PACING_ASAP,
                     caps=[Cap(scope=Cap.SCOPE_AD, max_impressions=3, window_s=3600)]),
        ]
    )  # fmt: skip
    servers: list[RunningServer] = []
    clients: list[ReachRankClient] = []
    try:
        for _ in range(2):
            servers.append(
                start_server(
                    Settings(
                        repo=trained_repo,
                        port=0,
                        grace_period_s=0.5,
                        state_store=redis.url,
                        state_timeout_ms=2000,
                        ad_campaigns_file=campaigns,
                        ad_campaigns_poll_interval_s=0,
                        ads_replay_time=True,
                    )
                )
            )
        for s in servers:
            clients.append(ReachRankClient(f"127.0.0.1:{s.port}", timeout=30.0))
            clients[-1].wait_ready(timeout=60)
        a, b = AdsClient(clients[0]), AdsClient(clients[1])
        yield a, b
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.stop(0)
        redis.stop()


def test_a_budget_spent_through_either_server_stops_both(pair: tuple[AdsClient, AdsClient]) -> None:
    a, b = pair
    winners = []
    for i in range(24):
        sdk = a if i % 2 else b
        r = sdk.rank_ads(
            "v1", [BidAd("ra", 100.0, "cpm"), BidAd("rb", 50.0, "cpm")], serve_time_unix_ms=T0 + i
        )
        winners.append(r.winners[0].ad_id)
    # 0.05 per impression: 20 of them spend the 0.999, whichever server served them.
    assert winners == ["ra"] * 20 + ["rb"] * 4
    assert a.spend(["r1"], T0)["r1"].billed == pytest.approx(1.0)
    assert b.spend(["r1"], T0)["r1"].billed == pytest.approx(1.0)


def test_a_frequency_cap_holds_across_servers_under_concurrency(
    pair: tuple[AdsClient, AdsClient],
) -> None:
    start = threading.Barrier(12)

    def one(i: int) -> int:
        start.wait()
        sdk = pair[i % 2]
        r = sdk.rank_ads("v2", [BidAd("rc", 10.0, "cpm")], serve_time_unix_ms=T0 + i)
        return len(r.winners)

    with ThreadPoolExecutor(12) as pool:
        assert sum(pool.map(one, range(12))) == 3
