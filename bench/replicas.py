"""Replicas sharing a Redis state store (bench.replica_bed): cross-replica freshness and
1 vs 3 replicas throughput.

- Freshness: an impression + click logged through replica i for a new user; replica i+1 (which
  had just answered for that user, so its cache holds the old history: the worst case) is
  polled until its RankAds answer changes. Reported: ms from LogEvents' acknowledgement to the
  first changed answer, p50 / p99 / max over ``--trials`` (goal: p99 <= 1 s; the bound is
  ``state_cache_ms``, default 200 ms, plus a poll).
- Throughput: ``reachrank loadtest`` (closed loop, ``--concurrency`` in flight, its own
  process) over one replica, then round-robin over three, each with the Redis store.

    python -m bench.replicas [--repo model_repo] [--trials 100] [--duration 10]
                             [--concurrency 16] [--rpc rank-ads]

Without --repo it simulates a marketplace and trains a small repository first (about a minute).
Writes bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.kserve import train_repository
from bench.replica_bed import ReplicaBed
from clients import ReachRankClient

RESULTS = Path(__file__).resolve().parent / "results"
DEGRADED = "reachrank_state_store_degraded_total"
ADS = [{"ad_id": f"i{k}", "bid": 1.0} for k in range(1, 6)]


def answer(client: ReachRankClient, user: str) -> list[float]:
    return [ad.pctr for ad in client.rank_ads(user, ADS, all_ranked=True, timeout=10).ads]


def freshness(bed: ReplicaBed, trials: int) -> dict[str, float]:
    clients = [ReachRankClient(t) for t in bed.targets]
    lags = []
    try:
        for k in range(trials):
            writer, reader = clients[k % 3], clients[(k + 1) % 3]
            user = f"fresh-{os.getpid()}-{k}"
            before = answer(reader, user)
            writer.log_events(
                [{"user_id": user, "item_id": "i1", "event": e} for e in ("impression", "click")]
            )
            acked = time.perf_counter()
            while answer(reader, user) == before:
                if time.perf_counter() - acked > 30:
                    raise RuntimeError(f"{user}: never reached the other replica")
            lags.append((time.perf_counter() - acked) * 1000)
    finally:
        for c in clients:
            c.close()
    a = np.array(lags)
    return {
        "trials": trials,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(bed: ReplicaBed, args: argparse.Namespace) -> dict:
    """The loadtest's figures, and the cores each side used meanwhile (what limits it)."""
    servers = {r.process.pid for r in bed.replicas if r.process is not None}
    redis = bed.redis.process.pid if bed.redis.process is not None else None
    before = {pid: cpu_s(pid) for pid in [*servers, redis] if pid is not None}
    degraded = sum(r.metric(DEGRADED) for r in bed.replicas)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    targets = bed.targets
    command = [str(Path(sys.executable).with_name("reachrank")), "loadtest"]
    command += ["--target", ",".join(targets), "--rpc", args.rpc, "--quiet", "--json", "-"]
    command += ["--concurrency", str(args.concurrency), "--duration", str(args.duration)]
    command += ["--warmup", "2", "--users", "2000", "--items", "200"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = {pid: (cpu_s(pid) - t) / wall for pid, t in before.items()}
    summary = json.loads(out)
    return {k: summary[k] for k in ("achieved_rps", "p50_ms", "p99_ms", "error_count")} | {
        "cores_replicas": sum(used[p] for p in servers),
        "cores_redis": used.get(redis, 0.0) if redis is not None else 0.0,
        "cores_loadgen": (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
        / wall,
        "load_average": os.getloadavg()[0],
        # Store calls answered without it (snapshot served / write queued) during the run.
        "degraded": sum(r.metric(DEGRADED) for r in bed.replicas) - degraded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rpc", default="rank-ads", choices=["rank-ads", "recommend"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or train_repository(Path(tmp) / "train")
        with ReplicaBed(repo, Path(tmp) / "one", 1) as one:
            single = throughput(one, args)
        with ReplicaBed(repo, Path(tmp) / "three", 3) as three:
            fresh = freshness(three, args.trials)
            triple = throughput(three, args)
    result = {
        "command": "python -m bench.replicas " + " ".join(sys.argv[1:]),
        "cores": os.cpu_count(),
        "freshness": fresh,
        "one_replica": single,
        "three_replicas": triple,
        "speedup": triple["achieved_rps"] / single["achieved_rps"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replicas.json").write_text(json.dumps(result, indent=2))
    print(
        f"freshness across replicas: p50 {fresh['p50_ms']:.0f} ms, p99 {fresh['p99_ms']:.0f} ms, "
        f"max {fresh['max_ms']:.0f} ms over {fresh['trials']} trials (goal p99 <= 1000 ms)"
    )
    print(
        f"{args.rpc} at {args.concurrency} in flight: 1 replica {single['achieved_rps']:,.0f}/s "
        f"(p99 {single['p99_ms']:.1f} ms), 3 replicas {triple['achieved_rps']:,.0f}/s "
        f"(p99 {triple['p99_ms']:.1f} ms): {result['speedup']:.2f}x on {os.cpu_count()} cores"
    )
    for name, r in (("1 replica", single), ("3 replicas", triple)):
        print(
            f"  {name}: cores used by replicas {r['cores_replicas']:.2f}, Redis "
            f"{r['cores_redis']:.2f}, load generator {r['cores_loadgen']:.2f} "
            f"(machine load average {r['load_average']:.1f}); {r['degraded']:.0f} store calls "
            "degraded"
        )


if __name__ == "__main__":
    main()
