"""Off-policy evaluation and the decision log on the simulator, through the real server.

A world of training.simulate is trained into a repository (two CTR models: the logger ships as
``ctr``, the other is the candidate). The logger serves RankAds (6 candidate ads, 1 slot,
epsilon-greedy exploration) to simulated users; clicks drawn from the simulator's ground truth
come back through LogEvents with the response's request id; the server logs every decision.

- **OPE** (per seed): the candidate's CTR estimated from the decision log by IPS, SNIPS and DR
  (``reachrank ope-report``'s code), against its true CTR measured by serving it on the same
  requests (expected clicks from the ground truth, so the yardstick itself has no noise).
  Goals: DR and SNIPS within 5% of the truth, inside their 95% intervals in >= 90% of seeds.
- **Training on the decision log** (first seed): a CTR model trained on the decisions (the
  features as served) against one trained on the client-sent events of the same traffic, both
  served on the same later period and scored on its impressions (logloss, AUC) and against
  the ground truth (mean squared error of the pCTR).
- **Logging cost**: server CPU per RankAds with the decision log on (default sampling and
  every decision) and off, same run (bench.cpu_cost's method).

Run: ``python -m bench.ope [--seeds 10] [--requests 4000]``; writes bench/results/ope.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

RESULTS = Path(__file__).resolve().parent / "results" / "ope.json"
ADS, SLOTS = 6, 1
EXPLORATION = {"rank_ads": {"method": "epsilon", "epsilon": 0.5}}


@dataclass(frozen=True)
class World:
    sim: Path
    repo: Path
    candidate: str  # the CTR model that is not the logger

    @property
    def truth(self) -> Any:
        from training.simulate import GroundTruth

        return GroundTruth.load(self.sim)


def build_world(root: Path, seed: int, users: int = 400, items: int = 120) -> World:
    """Simulate and train the logger and the candidate (lr and fm compete; the loser is the
    candidate)."""
    from training.models.ctr import CTRSize
    from training.pipeline import Dataset, TrainConfig, train_all
    from training.retrieval import RetrievalConfig
    from training.simulate import GroundTruth, SimulatorConfig, write_simulation

    sim, repo = root / "sim", root / "repo"
    write_simulation(sim, SimulatorConfig(users=users, items=items, days=14, seed=seed))
    data = Dataset(
        events=pl.scan_parquet(sim / "events.parquet"),
        items=pl.read_parquet(sim / "items.parquet"),
        users=pl.read_parquet(sim / "users.parquet"),
        ground_truth=GroundTruth.load(sim),
    )
    config = TrainConfig(
        ctr_models=("lr", "fm"),
        ctr_size=CTRSize(dim=4, mlp=(16, 8), cross_layers=1),
        ctr_epochs=2,
        n_buckets=1 << 14,
        budget_minutes=None,
        retrieval=RetrievalConfig(models=("trending",), progress=False),
        progress=False,
        seed=seed,
    )
    report = train_all(data, repo, config)
    best = report["chosen"]["ctr"] if "chosen" in report else "lr"
    other = next(m for m in ("lr", "fm") if m != best)
    return World(sim, repo, f"ctr-{other}")


@dataclass(frozen=True)
class Contexts:
    users: np.ndarray
    devices: np.ndarray
    ads: np.ndarray  # [n, ADS] item indices

    @classmethod
    def draw(cls, world: World, n: int, seed: int) -> Contexts:
        from training.simulate import DEVICES

        truth = world.truth
        rng = np.random.default_rng(seed)
        n_items = truth.item_latent.shape[0]
        ads = np.argsort(rng.random((n, n_items)), axis=1)[:, :ADS]
        return cls(
            rng.integers(0, truth.user_taste.shape[0], n), rng.integers(0, len(DEVICES), n), ads
        )


@contextmanager
def server(repo: Path, **settings: Any) -> Iterator[Any]:
    from clients import ReachRankClient
    from engine.server import start_server
    from engine.settings import Settings

    running = start_server(Settings(repo=repo, port=0, grace_period_s=1.0, **settings))
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            client.wait_ready(timeout=60)
            yield client, running
    finally:
        running.stop(0)


def serve(
    client: Any,
    world: World,
    contexts: Contexts,
    prefix: str,
    clicks: np.ndarray | None = None,
    threads: int = 4,
) -> dict[str, np.ndarray]:
    """One RankAds per context (``threads`` in flight); the expected clicks of what was shown
    (ground truth) and its pCTR. With ``clicks`` (a uniform draw per context) the client sends
    back the impression and, when the draw falls under the click probability, the click."""
    from concurrent.futures import ThreadPoolExecutor

    from training.simulate import DEVICES

    truth = world.truth
    n = len(contexts.users)
    expected, pctr = np.zeros(n), np.zeros(n)
    item = np.zeros(n, dtype=np.int64)

    def run(lo: int, hi: int) -> None:
        events: list[dict[str, Any]] = []
        for i in range(lo, hi):
            u, d = int(contexts.users[i]), int(contexts.devices[i])
            rid = f"{prefix}-{i}"
            auction = client.rank_ads(
                f"u{u}",
                [{"ad_id": f"i{j}", "bid": 1.0} for j in contexts.ads[i]],
                slots=SLOTS,
                context={"device": DEVICES[d]},
                request_id=rid,
                timeout=60,  # shared machines stall for seconds
            )
            winner = auction.winners[0]
            item[i] = int(winner.ad_id[1:])
            expected[i] = truth.click_probability(
                np.array([u]), item[i : i + 1], np.array([1]), np.array([d])
            )[0]
            pctr[i] = winner.pctr
            if clicks is None:
                continue
            base = {
                "user_id": f"u{u}",
                "item_id": winner.ad_id,
                "request_id": rid,
                "position": 1,
                "context": {"device": DEVICES[d]},
                "model": "ctr",
            }
            events.append({**base, "event": "impression"})
            if clicks[i] < expected[i]:
                events.append({**base, "event": "click"})
            if len(events) >= 200 or i == hi - 1:
                client.log_events(events, timeout=60)
                events = []

    bounds = np.linspace(0, n, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run, a, b) for a, b in pairwise(bounds)]:
            f.result()
    return {"expected": expected, "item": item, "pctr": pctr}


def log_traffic(
    world: World, contexts: Contexts, root: Path, name: str, seed: int, live_history: bool
) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """The logger serves every context exploring, every decision logged, clicks sent back."""
    decisions, feedback = root / f"decisions-{name}", root / f"feedback-{name}"
    with server(
        world.repo,
        decision_log_dir=decisions,
        feedback_dir=feedback,
        live_history=live_history,
        decision_sample_rates={"rank_ads": 1.0},
        decision_seed=seed,
        exploration=EXPLORATION,
    ) as (client, _):
        clicks = np.random.default_rng(seed + 1000).random(len(contexts.users))
        logged = serve(client, world, contexts, name, clicks)
    return decisions, feedback, logged


def ope_seed(world: World, seed: int, requests: int, root: Path) -> dict[str, Any]:
    """Log ``requests`` exploring decisions, estimate the candidate's CTR, serve it for truth.
    Live histories are off on both servers: the candidate then sees, serving, the inputs the
    decision log holds (with them on, its inputs would move with the logger's traffic)."""
    from training.decisions import read_feedback
    from training.ope_report import Candidate, ope_report

    contexts = Contexts.draw(world, requests, seed)
    decisions, feedback, logged = log_traffic(world, contexts, root, f"s{seed}", seed, False)
    with server(world.repo, ctr_model=world.candidate) as (client, _):
        target = serve(client, world, contexts, f"t{seed}")
    report = ope_report(
        decisions, read_feedback(feedback), Candidate.load(world.repo, world.candidate)
    )
    clicks = report["estimates"]["clicked"]
    true_ctr = float(target["expected"].mean())
    row = {
        "seed": seed,
        "decisions": report["decisions"],
        "matched_share": report["matched_share"],
        "true_ctr": true_ctr,
        "logging_true_ctr": float(logged["expected"].mean()),
    }
    for name in ("ips", "snips", "dr", "logging"):
        e = clicks[name]
        row[name] = e["value"]
        row[f"{name}_low"], row[f"{name}_high"] = e["low"], e["high"]
        if name != "logging":
            row[f"{name}_rel_error"] = abs(e["value"] - true_ctr) / true_ctr
            row[f"{name}_covers"] = e["low"] <= true_ctr <= e["high"]
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": len(rows)}
    for name in ("ips", "snips", "dr"):
        errors = [r[f"{name}_rel_error"] for r in rows]
        out[name] = {
            "median_rel_error": float(np.median(errors)),
            "max_rel_error": float(np.max(errors)),
            "within_5pct": int(sum(e <= 0.05 for e in errors)),
            "covered": int(sum(r[f"{name}_covers"] for r in rows)),
        }
    return out


def run_ope(
    root: Path, world: World, seeds: int, requests: int, first_seed: int = 0
) -> dict[str, Any]:
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        rows.append(ope_seed(world, seed, requests, root))
        r = rows[-1]
        print(
            f"seed {seed}: true {r['true_ctr']:.4f}  ips {r['ips']:.4f}  snips "
            f"{r['snips']:.4f}  dr {r['dr']:.4f} [{r['dr_low']:.4f}, {r['dr_high']:.4f}]  "
            f"logger {r['logging_true_ctr']:.4f}",
            flush=True,
        )
    return {"rows": rows, "summary": summary(rows), "requests_per_seed": requests}


def score_impressions(
    repo: Path, world: World, contexts: Contexts, shown: np.ndarray, feedback: Path
) -> np.ndarray:
    """The pCTR a repository's ``ctr`` serves for each shown (user, item, device), with the
    live histories of ``feedback`` (a copy: the server replays what followed its training)."""
    from concurrent.futures import ThreadPoolExecutor

    from training.simulate import DEVICES

    copy = feedback.parent / f"{feedback.name}-{repo.name}"
    shutil.copytree(feedback, copy)
    out = np.zeros(len(shown))
    with server(repo, feedback_dir=copy) as (client, _):

        def run(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                auction = client.rank_ads(
                    f"u{int(contexts.users[i])}",
                    [{"ad_id": f"i{int(shown[i])}", "bid": 1.0}],
                    context={"device": DEVICES[int(contexts.devices[i])]},
                )
                out[i] = auction.winners[0].pctr

        bounds = np.linspace(0, len(shown), 5).astype(int)
        with ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(run, a, b) for a, b in pairwise(bounds)]:
                f.result()
    return out


def run_training(root: Path, world: World, requests: int) -> dict[str, Any]:
    """A CTR model trained on the decision log of seed 0's traffic (features as served) vs one
    trained on the client-sent events of the same traffic (the event trainer, with the
    catalogue's side tables); both served on a later period's impressions."""
    from training import metrics
    from training.decisions import read_feedback, train_from_decisions
    from training.models.ctr import CTRSize
    from training.pipeline import Dataset, TrainConfig, train_all
    from training.readers import read_events
    from training.retrieval import RetrievalConfig

    # Live histories on: the served features include them, as in production.
    contexts = Contexts.draw(world, requests, seed=5_000)
    decisions, feedback, _ = log_traffic(world, contexts, root, "period-1", 5_001, True)
    config = TrainConfig(
        ctr_models=("lr",),
        ctr_size=CTRSize(dim=4, mlp=(16, 8), cross_layers=1),
        ctr_epochs=2,
        n_buckets=1 << 14,
        budget_minutes=None,
        ctr_search=False,
        retrieval=RetrievalConfig(models=("trending",), progress=False),
        progress=False,
    )
    from_decisions, from_events = root / "repo-decisions", root / "repo-events"
    started = time.perf_counter()
    a = train_from_decisions(
        decisions, read_feedback(feedback), world.repo, from_decisions, "lr", config
    )
    seconds_a = time.perf_counter() - started
    events, _ = read_events(feedback / "parquet", "events").collect()
    data = Dataset(
        events=events.lazy(),
        items=pl.read_parquet(world.sim / "items.parquet"),
        users=pl.read_parquet(world.sim / "users.parquet"),
    )
    started = time.perf_counter()
    b = train_all(data, from_events, config)
    seconds_b = time.perf_counter() - started
    # The later period: new requests served by the logger (exploring), clicks from the truth.
    later = Contexts.draw(world, requests // 2, seed=10_000)
    draws = np.random.default_rng(10_001).random(len(later.users))
    with server(
        world.repo,
        feedback_dir=root / "feedback-later",
        exploration=EXPLORATION,
        decision_seed=10_002,
    ) as (client, _):
        shown = serve(client, world, later, "later", draws)
    label = (draws < shown["expected"]).astype(float)
    rows = {}
    for name, repo in (("decision_log", from_decisions), ("client_events", from_events)):
        p = score_impressions(repo, world, later, shown["item"], feedback)
        rows[name] = {
            **metrics.evaluate_classification(label, p, ("auc", "logloss", "ece")),
            "mse_vs_truth": float(np.mean((p - shown["expected"]) ** 2)),
        }
    rows["oracle"] = metrics.evaluate_classification(label, shown["expected"], ("auc", "logloss"))
    return {
        "train_rows": {
            "decision_log": a["rows"],
            "client_events": json.loads((from_events / "ctr" / "1" / "manifest.json").read_text())[
                "train"
            ]["rows"],
        },
        "client_events_test": b["models"].get("ctr_lr"),
        "train_seconds": {"decision_log": seconds_a, "client_events": seconds_b},
        "later_impressions": len(later.users),
        "metrics": rows,
    }


def run_cost(world: World, seconds: float, root: Path) -> list[dict[str, Any]]:
    """Server CPU per request with the decision log off, at the default sampling and logging
    every decision (bench.cpu_cost's method: /proc CPU over a fixed-load run), round-robin."""
    from bench.cpu_cost import process_cpu_seconds
    from bench.serving import loadtest, serving
    from engine.decisions.config import DEFAULT_SAMPLE_RATES

    calls = (
        ("health", "health", []),
        ("RankAds, 20 ads", "rank-ads", ["--ads", "20", "--slots", "3"]),
        ("Recommend, k=10", "recommend", ["-k", "10"]),
    )
    every = {rpc: 1.0 for rpc in DEFAULT_SAMPLE_RATES}
    modes = {"off": None, "default": DEFAULT_SAMPLE_RATES, "every decision": every}
    users, items = 400, 120
    found: dict[tuple[str, str], list[float]] = {}
    for repeat in range(2):
        for mode, rates in modes.items():
            env = {}
            if rates is not None:
                env = {
                    "REACHRANK_DECISION_LOG_DIR": str(root / f"cost-{mode}-{repeat}"),
                    "REACHRANK_DECISION_SAMPLE_RATES": json.dumps(rates),
                    # Segments seal every second, so the Parquet conversion is in the count.
                    "REACHRANK_FEEDBACK_SEGMENT_AGE_S": "1",
                }
            with serving(world.repo, env, with_pid=True) as (target, pid):
                for label, rpc, extra in calls:
                    loadtest(target, rpc, 8, 1.0, users, items, extra)
                    before = process_cpu_seconds(pid)
                    r = loadtest(target, rpc, 8, seconds, users, items, [*extra, "--warmup", "0"])
                    cpu = process_cpu_seconds(pid) - before
                    found.setdefault((mode, label), []).append(cpu / max(r["requests"], 1) * 1e6)
    out = []
    for (mode, label), values in found.items():
        off = np.median(found[("off", label)])
        out.append(
            {
                "mode": mode,
                "call": label,
                "cpu_us_per_request": float(np.median(values)),
                "vs_off": float(np.median(values) / off),
                "runs": values,
            }
        )
    return out


PARTS = ("ope", "training", "cost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--world-seed", type=int, default=11)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"Of {PARTS}.")
    parser.add_argument("--cost-seconds", type=float, default=8.0)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    root = Path(tempfile.mkdtemp(prefix="bench-ope-"))
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    started = time.perf_counter()
    try:
        world = build_world(root / "world", args.world_seed)
        if "ope" in parts:
            result["ope"] = run_ope(root, world, args.seeds, args.requests, args.first_seed)
            print(json.dumps(result["ope"]["summary"], indent=2))
        if "training" in parts:
            result["training"] = run_training(root, world, args.requests)
            print(json.dumps(result["training"], indent=2))
        if "cost" in parts:
            result["cost"] = run_cost(world, args.cost_seconds, root)
            for row in result["cost"]:
                print(
                    f"{row['mode']:<15}{row['call']:<18}{row['cpu_us_per_request']:>9,.0f} µs"
                    f"{row['vs_off']:>7.2f}x"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    command = (
        f"python -m bench.ope --seeds {args.seeds} --requests {args.requests} --parts {args.parts}"
    )
    for part in parts:  # each part remembers the run that measured it
        if isinstance(result.get(part), dict):
            result[part]["command"] = command
        else:
            result[part] = {"rows": result[part], "command": command}
    result["seconds"] = time.perf_counter() - started
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
