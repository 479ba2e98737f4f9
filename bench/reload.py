"""Hot reload under load: p50/p99/max latency and failures of RankAds + Recommend while the
CTR and retrieval models are swapped to new versions again and again, vs the same load
without swaps. Run: ``python -m bench.reload``; writes bench/results/reload.json."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
from reachrank.v1 import models_pb2, models_pb2_grpc

from clients import ReachRankClient
from clients.errors import ReachRankError
from engine.server import start_server
from engine.settings import Settings
from training.pipeline import Dataset, TrainConfig, train_all
from training.retrieval import RetrievalConfig
from training.simulate import SimulatorConfig, write_simulation

RESULTS = Path(__file__).resolve().parent / "results"


def add_version(repo: Path, name: str, version: int) -> None:
    tmp = repo / name / f".incoming-{version}"
    shutil.copytree(repo / name / "1", tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["version"] = version
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    tmp.rename(repo / name / str(version))


def drive(
    port: int, seconds: float, threads: int, swap: bool, repo: Path, first_version: int
) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with ReachRankClient(f"127.0.0.1:{port}") as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    client.rank_ads(
                        "u3", [{"ad_id": f"i{j}", "bid": 1.0} for j in range(50)], timeout=10
                    )
                    client.recommend("u5", k=10, timeout=10)
                except ReachRankError as exc:
                    failures.append(exc.code.name)
                latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=load) for _ in range(threads)]
    for w in workers:
        w.start()
    swaps, version, begin = 0, first_version, time.perf_counter()
    stub = models_pb2_grpc.ModelServiceStub(
        __import__("grpc").insecure_channel(f"127.0.0.1:{port}")
    )
    while time.perf_counter() - begin < seconds:
        if swap:
            version += 1
            for name in ("ctr", "retrieval"):
                add_version(repo, name, version)
                stub.Load(models_pb2.LoadModelRequest(name=name), timeout=120)
            swaps += 1
        time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join()
    ms = np.array(latencies) * 1000
    return {
        "swaps": swaps,
        "requests": len(latencies),
        "failures": len(failures),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "last_version": version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "reload.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sim_dir, repo = Path(tmp) / "sim", Path(tmp) / "repo"
        write_simulation(sim_dir, SimulatorConfig())
        data = Dataset(
            events=pl.scan_parquet(sim_dir / "events.parquet"),
            items=pl.read_parquet(sim_dir / "items.parquet"),
            users=pl.read_parquet(sim_dir / "users.parquet"),
        )
        train_all(
            data,
            repo,
            TrainConfig(progress=False, retrieval=RetrievalConfig(models=("mf",), progress=False)),
        )
        server = start_server(Settings(repo=repo, port=0))
        try:
            quiet = drive(server.port, args.seconds, args.threads, False, repo, 1)
            swapping = drive(server.port, args.seconds, args.threads, True, repo, 1)
        finally:
            server.stop(0)
    result = {
        "threads": args.threads,
        "seconds": args.seconds,
        "no_swaps": quiet,
        "swaps": swapping,
    }
    for label, r in (("steady", quiet), ("swapping", swapping)):
        print(
            f"{label:9s} swaps {r['swaps']:3d} requests {r['requests']:6d} failures {r['failures']} "
            f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms max {r['max_ms']:.1f} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
