"""Ad campaigns through the real server and client: flights and unknown campaigns drop ads with
a reason, an exhausted budget stops serving at once, CPC spend is reconciled from logged clicks,
frequency caps hold under concurrent requests, pacing follows the traffic curve on a tiny
compressed day, CPA bids rank and pay with the served pCVR, and campaigns set by RPC persist in
the file other workers poll."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from reachrank.v1 import ad_campaigns_pb2

from clients import ReachRankClient
from clients.ads import AdsClient, BidAd, BilledEvent
from clients.errors import ReachRankError
from engine.ads.campaigns import CampaignBook, CampaignFile
from engine.server import RunningServer, start_server
from engine.settings import Settings

DAY_MS = 86_400_000
Campaign = ad_campaigns_pb2.AdCampaign
Cap = ad_campaigns_pb2.FrequencyCap


def day_start(day: int) -> int:
    """Midnight UTC of 2026-01-<day> in ms (each test serves on its own day)."""
    return int(dt.datetime(2026, 1, day, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def server(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("ads")
    running = start_server(
        Settings(
            repo=trained_repo,
            port=0,
            grace_period_s=1.0,
            feedback_dir=work / "feedback",
            ad_campaigns_file=work / "campaigns.json",
            ad_campaigns_poll_interval_s=0,
            ads_replay_time=True,
            ads_seed=7,
            ads_pacing_interval_s=3600,
            ads_click_window_s=600,
        )
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def ads(server: RunningServer) -> Iterator[AdsClient]:
    with ReachRankClient(f"127.0.0.1:{server.port}") as client:
        client.wait_ready(timeout=60)
        yield AdsClient(client)


def test_unknown_and_out_of_flight_campaigns_drop_their_ads_with_a_reason(ads: AdsClient) -> None:
    ads.set_campaign(
        Campaign(
            campaign_id="old", advertiser="x", daily_budget=5, end_date="2026-01-01", ad_ids=["o1"]
        )
    )
    ads.set_campaign(
        Campaign(
            campaign_id="new",
            advertiser="x",
            daily_budget=5,
            start_date="2026-02-01",
            ad_ids=["n1"],
        )
    )
    ads.set_campaign(Campaign(campaign_id="live", advertiser="x", daily_budget=5, ad_ids=["l1"]))
    r = ads.rank_ads(
        "u1",
        [BidAd("o1", 1.0), BidAd("n1", 1.0), BidAd("l1", 1.0), BidAd("stray", 1.0)],
        serve_time_unix_ms=day_start(2) + 3_600_000,
        slots=2,
    )
    assert dict(r.dropped) == {
        "o1": "campaign_ended",
        "n1": "campaign_not_started",
        "stray": "unknown_campaign",
    }
    assert [a.ad_id for a in r.winners] == ["l1"]
    # Every ad dropped: an answer without winners, not an error.
    r = ads.rank_ads("u1", [BidAd("o1", 1.0)], serve_time_unix_ms=day_start(2))
    assert r.ads == () and r.dropped == (("o1", "campaign_ended"),)


def test_an_exhausted_campaign_stops_serving_at_once(ads: AdsClient) -> None:
    # a1 (CPM 100) beats b1 (CPM 50) and pays 50 CPM: 0.05 per impression, billed at serve.
    pacing = Campaign.PACING_ASAP
    ads.set_campaign(
        Campaign(campaign_id="ca", advertiser="a", daily_budget=0.999, ad_ids=["a1"], pacing=pacing)
    )
    ads.set_campaign(
        Campaign(campaign_id="cb", advertiser="b", daily_budget=1e6, ad_ids=["b1"], pacing=pacing)
    )
    t0 = day_start(3) + 3_600_000
    winners = []
    for i in range(25):
        r = ads.rank_ads(
            "u2", [BidAd("a1", 100.0, "cpm"), BidAd("b1", 50.0, "cpm")], serve_time_unix_ms=t0 + i
        )
        winners.append(r.winners[0].ad_id)
        if r.winners[0].ad_id == "a1":
            assert r.winners[0].price == pytest.approx(50.0)
            assert r.winners[0].expected_charge == pytest.approx(0.05)
    # 19 impressions spend 0.95 < 0.999; the 20th reaches it; the 21st request drops a1.
    assert winners == ["a1"] * 20 + ["b1"] * 5
    r = ads.rank_ads("u2", [BidAd("a1", 100.0, "cpm")], serve_time_unix_ms=t0 + 99)
    assert r.dropped == (("a1", "budget_exhausted"),)
    spend = ads.spend(["ca"], at_unix_ms=t0)["ca"]
    assert spend.billed == pytest.approx(1.0) and spend.day == "2026-01-03"
    # The next local day starts with a fresh budget.
    r = ads.rank_ads("u2", [BidAd("a1", 100.0, "cpm")], serve_time_unix_ms=t0 + DAY_MS)
    assert [a.ad_id for a in r.winners] == ["a1"]


def test_cpc_spend_is_expected_at_serve_and_reconciled_from_logged_clicks(ads: AdsClient) -> None:
    ads.set_campaign(
        Campaign(campaign_id="cc", advertiser="c", daily_budget=100, ad_ids=["c1", "c2"],
                 pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    t0 = day_start(4) + 7_200_000
    r = ads.rank_ads("u3", [BidAd("c1", 2.0), BidAd("c2", 1.0)], serve_time_unix_ms=t0)
    win = r.winners[0]
    assert win.ad_id in ("c1", "c2") and win.expected_charge == pytest.approx(win.price * win.pctr)
    s = ads.spend(["cc"], at_unix_ms=t0)["cc"]
    assert s.billed == 0 and s.spend == pytest.approx(win.expected_charge)
    assert s.served_expected == pytest.approx(win.expected_charge)
    # The click comes: billed at the auction's price; until the click window (600 s) has passed
    # the impression's expected charge still counts too (errs towards underspend).
    ads.log_billed([BilledEvent("u3", win.ad_id, "click", charge=win.price, ts_unix_ms=t0 + 5)])
    s = ads.spend(["cc"], at_unix_ms=t0 + 1000)["cc"]
    assert s.billed == pytest.approx(win.price)
    assert s.spend == pytest.approx(win.price + win.expected_charge)
    s = ads.spend(["cc"], at_unix_ms=t0 + 11 * 60_000)["cc"]
    assert s.spend == pytest.approx(win.price)  # reconciled: only what was billed


def test_frequency_caps_hold_under_concurrent_requests(ads: AdsClient) -> None:
    caps = [
        Cap(scope=Cap.SCOPE_AD, max_impressions=3, window_s=3600),
        Cap(scope=Cap.SCOPE_ADVERTISER, max_impressions=4, window_s=86400),
    ]
    ads.set_campaign(
        Campaign(campaign_id="f1", advertiser="adv-f", daily_budget=1e6, ad_ids=["fa", "fb"],
                 caps=caps, pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    t0 = day_start(5) + 3_600_000
    start = threading.Barrier(16)

    def one(i: int) -> list[str]:
        start.wait()
        r = ads.rank_ads(
            "u4",
            [BidAd("fa", 100.0, "cpm"), BidAd("fb", 50.0, "cpm")],
            slots=2,
            serve_time_unix_ms=t0 + i,
        )
        return [a.ad_id for a in r.winners]

    with ThreadPoolExecutor(16) as pool:
        shown = [ad for winners in pool.map(one, range(16)) for ad in winners]
    # fa at most 3 per hour, the advertiser at most 4 per day: never more, whatever the race.
    assert 1 <= shown.count("fa") <= 3
    assert len(shown) == 4
    # Another user is not capped by u4's impressions.
    r = ads.rank_ads("u5", [BidAd("fa", 100.0, "cpm")], serve_time_unix_ms=t0)
    assert [a.ad_id for a in r.winners] == ["fa"]
    # Next hour: the per-ad window turned over, but the advertiser's daily cap still binds.
    r = ads.rank_ads("u4", [BidAd("fa", 100.0, "cpm")], serve_time_unix_ms=t0 + 3_600_000)
    assert r.dropped == (("fa", "frequency_cap"),)


def test_an_advertiser_cap_counts_every_campaign_of_the_advertiser(ads: AdsClient) -> None:
    cap = Cap(scope=Cap.SCOPE_ADVERTISER, max_impressions=2, window_s=86400)
    ads.set_campaign(
        Campaign(campaign_id="g1", advertiser="adv-g", daily_budget=1e6, ad_ids=["g1a"],
                 caps=[cap], pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    ads.set_campaign(
        Campaign(campaign_id="g2", advertiser="adv-g", daily_budget=1e6, ad_ids=["g2a"],
                 pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    t0 = day_start(8)
    shown = []
    for i, ad in enumerate(["g2a", "g1a", "g2a", "g1a"]):
        r = ads.rank_ads("u7", [BidAd(ad, 10.0, "cpm")], serve_time_unix_ms=t0 + i)
        shown.append(len(r.winners))
    assert shown == [1, 1, 0, 0]  # g2 declares no cap, but its impressions count for adv-g


def test_pacing_spreads_the_budget_over_the_traffic_curve(ads: AdsClient) -> None:
    # A tiny compressed day: 40 requests per hour; the paced campaign would spend 40 x 0.05 = 2
    # per hour unthrottled (48 a day) but has 12; an ASAP twin with the same budget runs out.
    # Traffic and target follow the same curve: twice the traffic in the day's second half.
    curve = [1.0] * 12 + [2.0] * 12
    ads.set_campaign(
        Campaign(
            campaign_id="pe", advertiser="p", daily_budget=12, ad_ids=["pe1"], traffic_curve=curve
        )
    )
    ads.set_campaign(
        Campaign(campaign_id="pa", advertiser="q", daily_budget=12, ad_ids=["pa1"],
                 pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    ads.set_campaign(
        Campaign(campaign_id="pf", advertiser="r", daily_budget=1e6, ad_ids=["pf1"],
                 pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    t0 = day_start(6)
    hours = [h for h in range(24) for _ in range(int(40 * curve[h] / 1.5))]
    cumulative = {"pe": [], "pa": []}
    spent = {"pe": 0.0, "pa": 0.0}
    for i, h in enumerate(hours):
        at = t0 + h * 3_600_000 + (i % 40) * 60_000
        for ad, cid in (("pe1", "pe"), ("pa1", "pa")):
            r = ads.rank_ads(
                f"user{i}",
                [BidAd(ad, 100.0, "cpm"), BidAd("pf1", 50.0, "cpm")],
                serve_time_unix_ms=at,
            )
            spent[cid] += sum(a.expected_charge for a in r.winners if a.ad_id == ad)
        if i + 1 == len(hours) or hours[i + 1] != h:
            for cid in spent:
                cumulative[cid].append(spent[cid])
    target = [12 * sum(curve[: h + 1]) / sum(curve) for h in range(24)]
    paced_error = max(abs(c - t) for c, t in zip(cumulative["pe"], target, strict=True))
    asap_error = max(abs(c - t) for c, t in zip(cumulative["pa"], target, strict=True))
    assert cumulative["pe"][-1] <= 12 + 0.05  # no overspend beyond one impression
    assert cumulative["pe"][-1] >= 0.9 * 12
    assert paced_error <= 0.15 * 12, (cumulative["pe"], target)
    assert asap_error >= 0.5 * 12  # without pacing the budget is gone in the first hours
    assert cumulative["pa"][11] >= 12 - 0.05  # spent before noon


def test_cpa_bids_rank_and_pay_with_the_served_pcvr(ads: AdsClient) -> None:
    ads.set_campaign(
        Campaign(campaign_id="cpa", advertiser="z", daily_budget=100, ad_ids=["z1", "z2"],
                 pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    r = ads.rank_ads(
        "u6",
        [BidAd("z1", 30.0, "cpa"), BidAd("z2", 1.0, "cpc")],
        slots=2,
        serve_time_unix_ms=day_start(7),
    )
    by_id = {a.ad_id: a for a in r.ads}
    cpa, cpc = by_id["z1"], by_id["z2"]
    assert cpa.pcvr is not None and 0 < cpa.pcvr < 1  # the tiny log has purchases: ESMM served
    assert cpa.expected_value == pytest.approx(30.0 * cpa.pctr * cpa.pcvr, rel=1e-5)
    assert cpc.expected_value == pytest.approx(1.0 * cpc.pctr, rel=1e-5)
    first, second = sorted((cpa, cpc), key=lambda a: a.slot)
    # The winner of slot 1 pays, in its unit, the runner-up's value per impression.
    units = first.pctr * (first.pcvr if first.bid_type == "cpa" else 1.0)
    assert first.price == pytest.approx(second.expected_value / units, rel=1e-4)
    assert first.expected_charge == pytest.approx(second.expected_value, rel=1e-4)


def test_bad_campaigns_are_refused_with_the_field_named(ads: AdsClient) -> None:
    for campaign, field in [
        (Campaign(campaign_id="bad", advertiser="x", daily_budget=0), "daily_budget"),
        (
            Campaign(campaign_id="bad", advertiser="x", daily_budget=1, time_zone="Mars/Base"),
            "time_zone",
        ),
        (Campaign(campaign_id="bad", advertiser="x", daily_budget=1, ad_ids=["l1"]), "l1"),
        (
            Campaign(campaign_id="bad", advertiser="x", daily_budget=1, traffic_curve=[1.0]),
            "traffic_curve",
        ),
    ]:
        with pytest.raises(ReachRankError) as error:
            ads.set_campaign(campaign)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.value.message


def test_campaigns_set_by_rpc_persist_in_the_file_other_workers_read(
    ads: AdsClient, server: RunningServer
) -> None:
    ads.set_campaign(Campaign(campaign_id="persist", advertiser="x", daily_budget=3, ad_ids=["p9"]))
    path = server.settings.ad_campaigns_file
    assert path is not None
    stored = json.loads(path.read_text())["campaigns"]
    assert "persist" in [c["campaignId"] for c in stored]
    other = CampaignBook(CampaignFile(path).read(), CampaignFile(path))  # another worker
    assert other.by_ad["p9"].budget == 3
    ads.delete_campaign("persist")
    assert other.refresh() and "p9" not in other.by_ad


def test_a_request_without_consent_counts_no_frequency_cap(ads: AdsClient) -> None:
    cap = Cap(scope=Cap.SCOPE_AD, max_impressions=1, window_s=3600)
    ads.set_campaign(
        Campaign(campaign_id="nc", advertiser="adv-nc", daily_budget=1e6, ad_ids=["nca"],
                 caps=[cap], pacing=Campaign.PACING_ASAP)
    )  # fmt: skip
    t0 = day_start(11)
    anonymous = [
        ads.rank_ads("u-anon", [BidAd("nca", 10.0, "cpm")], serve_time_unix_ms=t0 + i,
                     consent="context_only")
        for i in range(3)
    ]  # fmt: skip
    # Not counted: every unconsented request is served (a cap needs per-user state) ...
    assert [len(r.winners) for r in anonymous] == [1, 1, 1]
    # ... and once the user consents, the cap starts from nothing: one impression, then capped.
    shown = [
        len(ads.rank_ads("u-anon", [BidAd("nca", 10.0, "cpm")], serve_time_unix_ms=t0 + 10 + i)
            .winners)
        for i in range(2)
    ]  # fmt: skip
    assert shown == [1, 0]


def test_the_campaigns_poll_thread_stops_with_the_server(
    trained_repo: Path, tmp_path: Path
) -> None:
    path = tmp_path / "campaigns.json"
    CampaignFile(path).write(
        [Campaign(campaign_id="c", advertiser="a", daily_budget=1, ad_ids=["a1"])]
    )
    running = start_server(
        Settings(repo=trained_repo, port=0, feedback_dir=tmp_path / "feedback",
                 ad_campaigns_file=path, ad_campaigns_poll_interval_s=0.05)
    )  # fmt: skip
    assert running.ads is not None
    thread = running.ads._thread
    try:
        assert thread is not None and thread.is_alive()
    finally:
        running.stop(0)
    assert not thread.is_alive()
    assert thread not in threading.enumerate()
