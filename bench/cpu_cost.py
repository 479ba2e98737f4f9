"""Server CPU per request, against a health check on the same server in the same run.

Throughput on these shared machines drifts by tens of percent between runs; the CPU time the
server process spends per answered call (utime + stime from ``/proc/PID/stat`` over a
fixed-load run, divided by the calls answered) is far steadier, and its ratio to a health
check's cost on the same server (the transport's own price) is what the request path adds.

Run: ``python -m bench.cpu_cost [--repo model_repo] [--seconds 8] [--concurrency 8]``. Without
``--repo`` it simulates the demo marketplace and trains the demo repository with the real CLI
defaults (what ``make serve`` builds). The load generator runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# (label, loadtest --rpc, extra loadtest options)
CALLS: tuple[tuple[str, str, list[str]], ...] = (
    ("grpc.health.v1.Health/Check", "health", []),
    ("RankAds, 20 ads", "rank-ads", ["--ads", "20", "--slots", "3"]),
    ("RankAds, 200 ads", "rank-ads", ["--ads", "200", "--slots", "3"]),
    ("Recommend, k=10", "recommend", ["-k", "10"]),
)
_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children are not needed: one process serves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def demo_repository(work: Path) -> Path:
    cli = str(Path(sys.executable).with_name("reachrank"))
    data, repo = work / "demo_data", work / "model_repo"
    subprocess.run([cli, "simulate", "--out", str(data)], check=True, capture_output=True)
    subprocess.run(
        [cli, "train", "--events", str(data), "--format", "simulator", "--out", str(repo)],
        check=True,
        capture_output=True,
    )
    return repo


def measure(
    repo: Path, seconds: float, concurrency: int, users: int, items: int, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Every call of CALLS against one server process, one after another."""
    from bench.serving import loadtest, serving  # bench.serving imports this module

    rows = []
    with serving(repo, env, with_pid=True) as (target, pid):
        for label, rpc, extra in CALLS:
            # Warm the path first (the loadtest's own warm-up is excluded from its count but not
            # from the server's CPU clock, so measure around a second, counted run only).
            loadtest(target, rpc, concurrency, 1.0, users, items, extra)
            before = process_cpu_seconds(pid)
            r = loadtest(target, rpc, concurrency, seconds, users, items, [*extra, "--warmup", "0"])
            cpu = process_cpu_seconds(pid) - before
            answered = r["requests"]
            rows.append(
                {
                    "call": label,
                    "concurrency": concurrency,
                    "requests_per_s": r["achieved_rps"],
                    "cpu_us_per_request": cpu / max(answered, 1) * 1e6,
                    "p99_ms": r["p99_ms"],
                    "errors": r.get("errors", {}),
                }
            )
    base = rows[0]["cpu_us_per_request"]
    for row in rows:
        row["vs_health"] = row["cpu_us_per_request"] / base
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| call | req/s | server CPU per request | vs a health check | p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['call']} | {r['requests_per_s']:,.0f} | {r['cpu_us_per_request']:,.0f} µs "
            f"| {r['vs_health']:.1f}x | {r['p99_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="Repository to serve (default: train the demo).")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_cost.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or demo_repository(Path(tmp))
        rows = measure(repo, args.seconds, args.concurrency, args.users, args.items, {})
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
