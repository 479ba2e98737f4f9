"""A simulated ad day replayed through the real server and client (issue 18): campaigns with
daily budgets, CPC / CPA / CPM bids and frequency caps; requests follow a daily traffic curve on
a compressed clock (``serve_time_unix_ms``, the server runs with ``ads_replay_time``); users
click with the served pCTR and buy with the served pCVR (or each ad's fixed rate when the
model serves none); clicks and purchases are logged with their charges through LogEvents.

Reports, with pacing (PACING_EVEN) and without (PACING_ASAP), on the same requests and seeds:
overspend per campaign (goal <= 1% of budget), spend-curve error (mean absolute deviation of
cumulative billed spend from budget x the curve's cumulative share, sampled each simulated
5 minutes; goal <= 5% of budget), revenue (all billed charges) and advertiser conversions, and
frequency-cap violations counted from the impressions served (goal 0). Then the server's CPU
per RankAds request (bench.cpu_cost's method: utime+stime over a fixed-load run, against a
health check on the same server) with campaigns, budgets, pacing and caps on vs off.

Run: ``python -m bench.ad_day [--requests 6000] [--seconds 6]``; writes
bench/results/ad_day.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from google.protobuf import json_format
from reachrank.v1 import ad_campaigns_pb2

RESULTS = Path(__file__).resolve().parent / "results"
Campaign = ad_campaigns_pb2.AdCampaign
Cap = ad_campaigns_pb2.FrequencyCap
DAY_S = 86400
# Share of the day's requests per hour: quiet nights, a midday bump, an evening peak.
TRAFFIC = [0.3, 0.2, 0.15, 0.15, 0.2, 0.4, 0.8, 1.2, 1.4, 1.3, 1.2, 1.3,
           1.5, 1.4, 1.2, 1.2, 1.3, 1.6, 2.0, 2.4, 2.5, 2.0, 1.2, 0.6]  # fmt: skip


@dataclass(frozen=True)
class AdSpec:
    ad_id: str
    campaign: str
    bid_type: str
    bid: float
    cvr: float  # purchase probability after a click when the model serves no pCVR


def world(items: list[str], seed: int) -> tuple[list[Campaign], list[AdSpec]]:
    """Ten campaigns of four ads each: CPC, CPA and CPM bids, caps per ad, per campaign and per
    advertiser (budgets set by :func:`with_budgets`)."""
    rng = np.random.default_rng(seed)
    kinds = ["cpc", "cpa", "cpm", "cpc", "cpa", "cpc", "cpm", "cpa", "cpc", "cpa"]
    budgets = [1e9] * 10
    campaigns, ads = [], []
    for c, (kind, budget) in enumerate(zip(kinds, budgets, strict=True)):
        ids = items[4 * c : 4 * c + 4]
        caps = [Cap(scope=Cap.SCOPE_AD, max_impressions=3, window_s=DAY_S)]
        if c % 3 == 0:
            caps.append(Cap(scope=Cap.SCOPE_CAMPAIGN, max_impressions=2, window_s=3600))
        if c % 4 == 1:
            caps.append(Cap(scope=Cap.SCOPE_ADVERTISER, max_impressions=5, window_s=DAY_S))
        campaigns.append(
            Campaign(
                campaign_id=f"camp{c}",
                advertiser=f"adv{c // 2}",
                daily_budget=budget,
                ad_ids=ids,
                caps=caps,
                traffic_curve=TRAFFIC,
            )
        )
        for ad in ids:
            bid = {
                "cpc": rng.uniform(0.5, 2.0),
                "cpa": rng.uniform(10, 40),
                "cpm": rng.uniform(2, 12),
            }
            ads.append(
                AdSpec(
                    ad, f"camp{c}", kind, round(float(bid[kind]), 2), float(rng.uniform(0.03, 0.12))
                )
            )
    return campaigns, ads


def tiny_repository(work: Path) -> tuple[Path, list[str], list[str]]:
    """A small simulated marketplace and the model repository the real trainer builds (kept in
    ``work`` and reused when it is already there)."""
    from training.models.ctr import CTRSize
    from training.pipeline import Dataset, TrainConfig, train_all
    from training.retrieval import RetrievalConfig
    from training.sequence import SequenceConfig
    from training.simulate import GroundTruth, SimulatorConfig, write_simulation

    sim, repo = work / "sim", work / "repo"
    if (repo / "report.json").exists():
        users = pl.read_parquet(sim / "users.parquet")["user_id"].to_list()
        items = pl.read_parquet(sim / "items.parquet")["item_id"].to_list()
        return repo, users, items
    write_simulation(sim, SimulatorConfig(users=2000, items=120, days=14, seed=11))
    data = Dataset(
        events=pl.scan_parquet(sim / "events.parquet"),
        items=pl.read_parquet(sim / "items.parquet"),
        users=pl.read_parquet(sim / "users.parquet"),
        ground_truth=GroundTruth.load(sim),
    )
    config = TrainConfig(
        ctr_models=("lr",),
        ctr_size=CTRSize(dim=4, mlp=(16, 8), cross_layers=1),
        ctr_epochs=2,
        n_buckets=1 << 14,
        budget_minutes=None,
        ctr_search=False,
        retrieval=RetrievalConfig(
            mf_dim=8, mf_epochs=2, ials_dim=8, ials_iterations=2, ease_lambdas=(200.0,),
            sequence=SequenceConfig(dim=8, max_len=4, layers=1, max_epochs=1, eval_every=1),
            sequence_minutes=None, progress=False,
        ),
        progress=False,
    )  # fmt: skip
    train_all(data, repo, config)
    users = pl.read_parquet(sim / "users.parquet")["user_id"].to_list()
    items = pl.read_parquet(sim / "items.parquet")["item_id"].to_list()
    return repo, users, items


def competitive_bids(repo: Path, ads: list[AdSpec], users: list[str]) -> list[AdSpec]:
    """Bids of each type that compete with each other: the served model's mean pCTR and pCVR
    over the ads (RankAds with every ad, for 50 users) turn a draw from U(0.5, 1.5) into a
    bid per click, per conversion (/ mean pCVR) or per thousand impressions (x mean pCTR x
    1000) of about the same expected value per impression."""
    from clients import ReachRankClient
    from clients.ads import AdsClient, BidAd
    from engine.server import start_server
    from engine.settings import Settings

    server = start_server(Settings(repo=repo, port=0, grace_period_s=0.5))
    try:
        with ReachRankClient(f"127.0.0.1:{server.port}", timeout=30.0) as client:
            client.wait_ready(timeout=120)
            sdk = AdsClient(client)
            ranked = [
                a
                for u in users[:50]
                for a in sdk.rank_ads(u, [BidAd(a.ad_id, 1.0) for a in ads], all_ranked=True).ads
            ]
    finally:
        server.stop(0)
    pctr = float(np.mean([a.pctr for a in ranked]))
    pcvr = float(np.mean([a.pcvr for a in ranked if a.pcvr is not None] or [0.1]))
    rng = np.random.default_rng(len(ads))
    scale = {"cpc": 1.0, "cpa": 1.0 / pcvr, "cpm": 1000.0 * pctr}
    return [
        AdSpec(a.ad_id, a.campaign, a.bid_type, round(float(rng.uniform(0.5, 1.5) * scale[a.bid_type]), 2), a.cvr)
        for a in ads
    ]  # fmt: skip


# Each campaign's budget as a share of what it would spend in a day without one: all would run
# out before the day ends if they served every auction they win.
BUDGET_SHARES = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.25, 0.35, 0.45, 0.55]


def with_budgets(campaigns: list[Campaign], probe: dict[str, Any], scale: float) -> list[Campaign]:
    """The campaigns with budgets from a probe run without binding budgets (``scale``: the
    day's requests over the probe's)."""
    spent = {p["campaign"]: p["spent"] for p in probe["campaigns"]}
    out = []
    for c, share in zip(campaigns, BUDGET_SHARES, strict=True):
        copy = Campaign()
        copy.CopyFrom(c)
        copy.daily_budget = round(max(spent[c.campaign_id] * scale * share, 1.0), 2)
        out.append(copy)
    return out


def replay(
    repo: Path,
    work: Path,
    campaigns: list[Campaign],
    ads: list[AdSpec],
    users: list[str],
    requests: int,
    pacing: int,
    seed: int,
) -> dict[str, Any]:
    """One simulated day through a fresh server; the simulator's own books of what it billed."""
    from clients import ReachRankClient
    from clients.ads import AdsClient, BidAd, BilledEvent
    from clients.errors import ReachRankError
    from engine.server import start_server
    from engine.settings import Settings

    work.mkdir(parents=True, exist_ok=True)
    paced = []
    for c in campaigns:
        copy = Campaign()
        copy.CopyFrom(c)
        copy.pacing = pacing
        paced.append(copy)
    (work / "campaigns.json").write_text(
        json.dumps({"campaigns": [json_format.MessageToDict(c) for c in paced]})
    )
    server = start_server(
        Settings(
            repo=repo,
            port=0,
            grace_period_s=0.5,
            feedback_dir=work / "feedback",
            feedback_segment_age_s=None,
            ad_campaigns_file=work / "campaigns.json",
            ad_campaigns_poll_interval_s=0,
            ads_replay_time=True,
            ads_seed=seed,
            ads_pacing_interval_s=900,
            ads_click_window_s=1800,  # purchases come 10 minutes after the click
        )
    )
    rng = np.random.default_rng(seed)
    share = np.array(TRAFFIC) / sum(TRAFFIC)
    hours = np.sort(rng.choice(24, size=requests, p=share))
    seconds = np.sort(hours * 3600 + rng.uniform(0, 3600, requests))
    user_of = rng.zipf(1.3, requests) % len(users)  # heavy users meet the caps
    day0 = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
    spec = {a.ad_id: a for a in ads}
    budget = {c.campaign_id: c.daily_budget for c in campaigns}
    billed: dict[str, list[tuple[float, float]]] = defaultdict(list)  # campaign -> (s, charge)
    shown: Counter[tuple[str, ...]] = Counter()
    conversions = 0
    cpa_served = True
    candidates = [BidAd(a.ad_id, a.bid, a.bid_type) for a in ads]
    started = time.perf_counter()
    try:
        with ReachRankClient(f"127.0.0.1:{server.port}", timeout=30.0) as client:
            client.wait_ready(timeout=120)
            sdk = AdsClient(client)
            try:
                sdk.rank_ads(
                    users[0],
                    [BidAd(ads[0].ad_id, 1.0, "cpa")],
                    serve_time_unix_ms=day0 - DAY_S * 1000,
                )
            except ReachRankError:  # FAILED_PRECONDITION: the model serves no pCVR
                cpa_served = False
                candidates = [BidAd(a.ad_id, a.bid / 20 if a.bid_type == "cpa" else a.bid, "cpc" if a.bid_type == "cpa" else a.bid_type) for a in ads]  # fmt: skip
            due: list[tuple[int, BilledEvent]] = []  # (simulated ms, event), logged on time
            for t, u in zip(seconds.tolist(), user_of.tolist(), strict=True):
                at = day0 + int(t * 1000)
                ready = [e for ms, e in due if ms <= at]
                if ready:
                    sdk.log_billed(ready)
                    due = [(ms, e) for ms, e in due if ms > at]
                user = users[u]
                r = sdk.rank_ads(user, candidates, slots=2, serve_time_unix_ms=at)
                for w in r.winners:
                    a = spec[w.ad_id]
                    c = a.campaign
                    shown[("ad", w.ad_id, user)] += 1
                    shown[("campaign", c, user, str(int(t // 3600)))] += 1
                    shown[("advertiser", f"adv{int(c[4:]) // 2}", user)] += 1
                    if w.bid_type == "cpm":
                        billed[c].append((t, w.expected_charge))
                    if rng.random() < w.pctr:  # a click, 30 s later
                        cost = w.price if w.bid_type == "cpc" else 0.0
                        due.append(
                            (at + 30_000, BilledEvent(user, w.ad_id, "click", cost, at + 30_000))
                        )
                        if cost:
                            billed[c].append((t + 30, cost))
                        # Users buy with the served pCVR (each ad's own rate without one).
                        if rng.random() < (w.pcvr if w.pcvr is not None else a.cvr):
                            conversions += 1
                            cost = w.price if w.bid_type == "cpa" else 0.0
                            ms = at + 630_000
                            due.append((ms, BilledEvent(user, w.ad_id, "purchase", cost, ms)))
                            if cost:
                                billed[c].append((t + 630, cost))
    finally:
        server.stop(0)
    wall = time.perf_counter() - started
    return summarise(campaigns, budget, billed, shown, conversions, cpa_served, wall, requests)


def summarise(
    campaigns: list[Campaign],
    budget: dict[str, float],
    billed: dict[str, list[tuple[float, float]]],
    shown: Counter[tuple[str, ...]],
    conversions: int,
    cpa_served: bool,
    wall_s: float,
    requests: int,
) -> dict[str, Any]:
    grid = np.arange(0, DAY_S + 1, 300.0)
    cumulative_share = np.interp(
        grid / 3600, np.arange(25.0), np.concatenate([[0.0], np.cumsum(TRAFFIC) / sum(TRAFFIC)])
    )
    per = []
    for c in campaigns:
        events = sorted(billed.get(c.campaign_id, []))
        times = np.array([e[0] for e in events])
        costs = np.cumsum([e[1] for e in events]) if events else np.zeros(0)
        spent = costs[-1] if len(costs) else 0.0
        at_grid = (
            np.concatenate([[0.0], costs])[np.searchsorted(times, grid, side="right")]
            if len(costs)
            else np.zeros(len(grid))
        )
        b = budget[c.campaign_id]
        per.append(
            {
                "campaign": c.campaign_id,
                "budget": b,
                "spent": float(spent),
                "overspend_pct": 100 * max(0.0, spent - b) / b,
                "curve_error_pct": 100 * float(np.mean(np.abs(at_grid - b * cumulative_share))) / b,
                "exhausted_at_h": float(times[np.searchsorted(costs, b * 0.999)] / 3600)
                if len(costs) and costs[-1] >= 0.999 * b
                else None,
            }
        )
    limits = {}
    for c in campaigns:
        for cap in c.caps:
            limits[(cap.scope, c.campaign_id)] = cap.max_impressions
    violations = 0
    by_campaign_ad = {ad: c for c in campaigns for ad in c.ad_ids}
    for key, count in shown.items():
        if key[0] == "ad":
            c = by_campaign_ad[key[1]]
            limit = limits.get((Cap.SCOPE_AD, c.campaign_id))
        elif key[0] == "campaign":
            limit = limits.get((Cap.SCOPE_CAMPAIGN, key[1]))
        else:
            owned = [c for c in campaigns if c.advertiser == key[1]]
            limit = min((limits[(Cap.SCOPE_ADVERTISER, c.campaign_id)] for c in owned if (Cap.SCOPE_ADVERTISER, c.campaign_id) in limits), default=None)  # fmt: skip
        if limit is not None and count > limit:
            violations += count - limit
    return {
        "campaigns": per,
        "revenue": float(sum(p["spent"] for p in per)),
        "conversions": conversions,
        "max_overspend_pct": max(p["overspend_pct"] for p in per),
        "max_curve_error_pct": max(p["curve_error_pct"] for p in per),
        "mean_curve_error_pct": float(np.mean([p["curve_error_pct"] for p in per])),
        "cap_violations": violations,
        "impressions": int(sum(v for k, v in shown.items() if k[0] == "ad")),
        "cpa_bids_served": cpa_served,
        "requests": requests,
        "wall_s": wall_s,
    }


def cpu_cost(
    repo: Path, work: Path, campaigns: list[Campaign], items: int, seconds: float
) -> list[dict[str, Any]]:
    """RankAds CPU per request (20 ads) on a `reachrank serve` process, campaigns off vs on."""
    from bench.cpu_cost import process_cpu_seconds
    from bench.serving import loadtest, serving
    from clients import ReachRankClient
    from clients.ads import AdsClient, BidAd

    # Every item the load test bids with belongs to a campaign with caps and pacing (never
    # binding: what is measured is the checks' cost, not fewer auctions).
    on = work / "cpu_campaigns.json"
    ids = [f"i{j}" for j in range(items)]
    loose = [
        Campaign(
            campaign_id=f"load{k}",
            advertiser=f"adv{k}",
            daily_budget=1e12,
            ad_ids=ids[k::10],
            caps=[
                Cap(scope=Cap.SCOPE_AD, max_impressions=1_000_000, window_s=DAY_S),
                Cap(scope=Cap.SCOPE_CAMPAIGN, max_impressions=1_000_000, window_s=3600),
            ],
        )
        for k in range(10)
    ]
    on.write_text(json.dumps({"campaigns": [json_format.MessageToDict(c) for c in loose]}))
    rows = []
    for label, env in (("off", {}), ("on", {"REACHRANK_AD_CAMPAIGNS_FILE": str(on)})):
        with serving(repo, env, with_pid=True) as (target, pid):
            with ReachRankClient(target, timeout=30.0) as client:  # the campaigns really apply
                bids = [BidAd(i, 1.0) for i in [*ids[:19], "no-campaign"]]
                probe = AdsClient(client).rank_ads("u1", bids, slots=3)
                assert probe.dropped == (
                    (("no-campaign", "unknown_campaign"),) if label == "on" else ()
                )
            for call, rpc, extra in (
                ("health", "health", []),
                ("RankAds, 20 ads", "rank-ads", ["--ads", "20", "--slots", "3"]),
            ):
                loadtest(target, rpc, 8, 1.0, 2000, items, extra)
                before = process_cpu_seconds(pid)
                r = loadtest(target, rpc, 8, seconds, 2000, items, [*extra, "--warmup", "0"])
                cpu = process_cpu_seconds(pid) - before
                rows.append(
                    {
                        "campaigns": label,
                        "call": call,
                        "requests_per_s": r["achieved_rps"],
                        "cpu_us_per_request": cpu / max(r["requests"], 1) * 1e6,
                        "errors": r.get("errors", {}),
                    }
                )
    for label in ("off", "on"):
        health = next(r for r in rows if r["campaigns"] == label and r["call"] == "health")
        for r in rows:
            if r["campaigns"] == label:
                r["vs_health"] = r["cpu_us_per_request"] / health["cpu_us_per_request"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--seconds", type=float, default=6.0, help="CPU load per measurement")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--no-cpu", action="store_true", help="Skip the CPU measurement")
    parser.add_argument("--cpu-only", action="store_true", help="Only the CPU measurement")
    parser.add_argument("--cache", type=Path, help="Keep the simulated log and repository here")
    args = parser.parse_args()
    os.environ.setdefault(
        "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache")
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo, users, items = tiny_repository(args.cache or work)
        campaigns, ads = world(items, args.seed)
        if args.cpu_only:
            cpu = cpu_cost(repo, work, campaigns, len(items), args.seconds)
            print(json.dumps(cpu, indent=2))
            (RESULTS / "ad_day_cpu.json").write_text(json.dumps(cpu, indent=2))
            return
        ads = competitive_bids(repo, ads, users)
        probe_requests = max(1000, args.requests // 5)
        probe = replay(repo, work / "probe", campaigns, ads, users, probe_requests, Campaign.PACING_ASAP, args.seed + 1)  # fmt: skip
        campaigns = with_budgets(campaigns, probe, args.requests / probe_requests)
        runs = {
            name: replay(repo, work / name, campaigns, ads, users, args.requests, mode, args.seed)
            for name, mode in (("paced", Campaign.PACING_EVEN), ("asap", Campaign.PACING_ASAP))
        }
        cpu = [] if args.no_cpu else cpu_cost(repo, work, campaigns, len(items), args.seconds)
    result = {"command": "python -m bench.ad_day " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (False, None)), "runs": runs, "cpu": cpu}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ad_day.json").write_text(json.dumps(result, indent=2))
    print(
        "| run | max overspend | max / mean curve error | revenue | conversions | impressions | cap violations |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(
            f"| {name} | {r['max_overspend_pct']:.2f}% | {r['max_curve_error_pct']:.1f}% / "
            f"{r['mean_curve_error_pct']:.1f}% | {r['revenue']:.2f} | {r['conversions']} | "
            f"{r['impressions']} | {r['cap_violations']} |"
        )
    print(f"CPA bids served: {runs['paced']['cpa_bids_served']}")
    print(
        "\n| campaign | budget | paced spent | paced curve err | asap spent | asap curve err | asap exhausted at |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p, a in zip(runs["paced"]["campaigns"], runs["asap"]["campaigns"], strict=True):
        ex = f"{a['exhausted_at_h']:.1f} h" if a["exhausted_at_h"] is not None else "-"
        print(
            f"| {p['campaign']} | {p['budget']:.0f} | {p['spent']:.2f} | {p['curve_error_pct']:.1f}% | {a['spent']:.2f} | {a['curve_error_pct']:.1f}% | {ex} |"
        )
    if cpu:
        print("\n| campaigns | call | req/s | server CPU per request | vs health |")
        print("|---|---|---:|---:|---:|")
        for r in cpu:
            print(
                f"| {r['campaigns']} | {r['call']} | {r['requests_per_s']:,.0f} | {r['cpu_us_per_request']:,.0f} µs | {r['vs_health']:.1f}x |"
            )


if __name__ == "__main__":
    main()
