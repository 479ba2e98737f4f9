"""Campaign plans against the simulator's oracle: at a contact budget (20% by default), the
share of the oracle plan's incremental conversions the shipped uplift model's plan captures,
and the same for the response model, the T-learner and random targeting fitted on the same
training rows — all measured with the simulator's noise-free truth on customers that were not
in the campaign.

Run as `python -m bench.campaigns [--users N] [--fraction F]`; writes
bench/results/campaigns.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from training.simulate import SimulatorConfig, write_simulation
from training.uplift.data import CampaignSpec, campaign_data, encode_frame, read_campaign
from training.uplift.learners import MLPConfig, fit_learner, predict_uplift
from training.uplift.metrics import top_fraction_policy
from training.uplift.plan import find_bundle
from training.uplift.simulate import CampaignConfig, oracle_conversions, write_campaign
from training.uplift.train import UpliftConfig, train_uplift

RESULTS = Path(__file__).resolve().parent / "results" / "campaigns.json"
SPEC = CampaignSpec("treatment", "control", "converted", "spend")


def captured(truth: np.ndarray, uplift: np.ndarray, fraction: float) -> float:
    choice = top_fraction_policy(uplift, fraction)
    rows = np.flatnonzero(choice)
    return float(truth[rows, choice[rows] - 1].sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sim, repo = Path(tmp) / "sim", Path(tmp) / "repo"
        write_simulation(
            sim, SimulatorConfig(users=args.users, items=200, days=args.days, seed=args.seed)
        )
        write_campaign(sim, CampaignConfig(seed=args.seed, train_share=0.6))
        data = campaign_data(read_campaign(sim / "campaign.parquet", SPEC), SPEC)
        report = train_uplift(data, repo, UpliftConfig(seed=args.seed))
        customers = pl.read_parquet(sim / "customers.parquet")
        truth_table = pl.read_parquet(sim / "campaign_truth.parquet")
        truth = (
            customers.select("user_id")
            .join(truth_table, on="user_id", how="left")
            .select(f"uplift_{t}" for t in data.treatments)
            .to_numpy()
        )
        x = encode_frame(data.schema, customers)
        scores = {f"shipped ({report['winner']})": find_bundle(repo).score(x)}
        for name in ("response", "t_learner"):
            graph = fit_learner(name, data.x, data.arm, data.y, len(data.treatments), MLPConfig())
            scores[name] = predict_uplift(graph, x)
        scores["random"] = np.random.default_rng(args.seed).random(truth.shape)
        oracle = oracle_conversions(truth, args.fraction)
        rows = {n: captured(truth, s, args.fraction) for n, s in scores.items()}
    shipped = next(iter(rows))
    result = {
        "command": f"python -m bench.campaigns --users {args.users} --days {args.days} "
        f"--fraction {args.fraction} --seed {args.seed}",
        "fraction": args.fraction,
        "campaign_rows": len(data.y),
        "planned_customers": len(truth),
        "oracle_incremental_conversions": oracle,
        "incremental_conversions": rows,
        "share_of_oracle": {n: v / oracle for n, v in rows.items()},
        "shipped_vs_response": rows[shipped] / rows["response"],
        "winner": report["winner"],
        "candidates_plan_value_per_customer": {
            n: {"valid": r["valid"]["uplift_at_fraction"], "test": r["test"]["uplift_at_fraction"]}
            for n, r in report["candidates"].items()
        },
        "why": report["why"],
        "seconds": time.perf_counter() - started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| plan at {args.fraction:.0%} | incremental conversions | share of oracle |")
    print("|---|---|---|")
    print(f"| oracle | {oracle:.1f} | 1.00 |")
    for n, v in rows.items():
        print(f"| {n} | {v:.1f} | {v / oracle:.2f} |")
    print(f"shipped / response: {result['shipped_vs_response']:.2f}x; {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
