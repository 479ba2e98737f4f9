"""Serving efficiency: server CPU per request against a health check on the demo repository
(`bench.cpu_cost`), RankAds (200 candidates) through the real gRPC server vs the in-process
onnxruntime ceiling on the same model file, plus Recommend end to end over 100k items.

Run: ``python -m bench.serving [--quick]``. Builds its own repositories with the real trainer
(simulated marketplace; the largest CTR model gets 26 categorical fields x 16-d embeddings and
a 400-400 MLP, the smallest is logistic regression), starts ``reachrank serve`` as a separate
process, drives it with ``reachrank loadtest`` (another process), and writes
``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from bench import cpu_cost
from training.models.ctr import CTRSize
from training.pipeline import Dataset, TrainConfig, train_all
from training.retrieval import RetrievalConfig
from training.simulate import SimulatorConfig, write_simulation

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = 200
CONCURRENCY = (1, 8, 32, 64)
# 2 ids + category + 14 item attributes + 3 user attributes + 4 more + device + position = 26.
EXTRA_ITEM_FIELDS, EXTRA_USER_FIELDS = 14, 4


def _widen(sim: Path) -> None:
    """Give items and users more attribute columns, so the CTR model has ~26 fields."""
    items = pl.read_parquet(sim / "items.parquet")
    n = pl.col("item_id").str.slice(1).cast(pl.Int64)
    items = items.with_columns(
        (pl.lit(f"a{j}_") + (n * (j + 7) % (5 + 3 * j)).cast(pl.String)).alias(f"attr{j}")
        for j in range(EXTRA_ITEM_FIELDS)
    )
    items.write_parquet(sim / "items.parquet")
    users = pl.read_parquet(sim / "users.parquet")
    u = pl.col("user_id").str.slice(1).cast(pl.Int64)
    users = users.with_columns(
        (pl.lit(f"b{j}_") + (u * (j + 3) % (4 + 5 * j)).cast(pl.String)).alias(f"uattr{j}")
        for j in range(EXTRA_USER_FIELDS)
    )
    users.write_parquet(sim / "users.parquet")


def build_repo(
    workdir: Path, name: str, sim: SimulatorConfig, train: TrainConfig, widen: bool
) -> Path:
    data_dir, repo = workdir / f"{name}-data", workdir / f"{name}-repo"
    write_simulation(data_dir, sim)
    if widen:
        _widen(data_dir)
    data = Dataset(
        events=pl.scan_parquet(data_dir / "events.parquet"),
        items=pl.read_parquet(data_dir / "items.parquet"),
        users=pl.read_parquet(data_dir / "users.parquet"),
    )
    train_all(data, repo, train)
    return repo


def realistic_rows(repo: Path, sim: SimulatorConfig, n: int) -> dict[str, np.ndarray]:
    """The rows the engine scores: random users x blocks of catalogue items, encoded by the
    engine's own feature code (so the ceiling gathers the same embedding rows)."""
    from engine.registry import ModelRegistry
    from engine.settings import Settings

    registry = ModelRegistry(Settings(repo=repo, batching=False))
    ctr = registry.load("ctr")
    rng = np.random.default_rng(0)
    cats, nums = [], []
    for _ in range(n // CANDIDATES):
        items = [f"i{j}" for j in rng.integers(0, sim.items, CANDIDATES)]
        cat, num = ctr.features(f"u{rng.integers(0, sim.users)}", ctr.item_rows(items), {})
        cats.append(cat)
        nums.append(num)
    return {"cat": np.concatenate(cats), "num": np.concatenate(nums)}


def ceiling_rows_per_s(
    model: Path, rows: dict[str, np.ndarray], seconds: float
) -> tuple[float, int]:
    """Best rows/s of an in-process onnxruntime session (all cores) over batch sizes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    best, best_batch = 0.0, 0
    for batch in (CANDIDATES, 1024, 4096, 16384):
        feed = {name: np.ascontiguousarray(a[:batch]) for name, a in rows.items()}
        session.run(None, feed)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feed)
            done += batch
        rate = done / (time.perf_counter() - start)
        if rate > best:
            best, best_batch = rate, batch
    return best, best_batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(repo: Path, env: dict[str, str], workers: int = 1, with_pid: bool = False):
    """A `reachrank serve` process on a free port; yields its target (and pid, with_pid)."""
    port = free_port()
    cli = [sys.executable, "-c", "from clients.cli import main; main()"]
    proc = subprocess.Popen(
        [
            *cli,
            "serve",
            "--repo",
            str(repo),
            "--port",
            str(port),
            "--metrics-port",
            "-1",
            "--workers",
            str(workers),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        from clients import ReachRankClient

        with ReachRankClient(f"127.0.0.1:{port}") as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
                try:
                    if client.health(timeout=1) == "SERVING":
                        break
                except Exception:  # not listening yet
                    pass
                if time.time() > deadline:
                    raise TimeoutError("server did not become ready")
                time.sleep(0.5)
        yield (f"127.0.0.1:{port}", proc.pid) if with_pid else f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def loadtest(
    target: str,
    rpc: str,
    concurrency: int,
    seconds: float,
    users: int,
    items: int,
    extra: list[str],
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from clients.cli import main; main()",
                "loadtest",
                "--target",
                target,
                "--rpc",
                rpc,
                "--concurrency",
                str(concurrency),
                "--duration",
                str(seconds),
                "--warmup",
                "2",
                "--users",
                str(users),
                "--items",
                str(items),
                "--timeout",
                "10",
                "--json",
                out.name,
                "--quiet",
                *extra,
            ],
            check=True,
        )
        return json.loads(Path(out.name).read_text())


def rank_ads_suite(
    label: str, repo: Path, sim: SimulatorConfig, seconds: float, env: dict[str, str]
) -> list[dict[str, Any]]:
    manifest = json.loads(max((repo / "ctr").glob("*/manifest.json")).read_text())
    n_cat = manifest["onnx"]["inputs"][0]["shape"][1]
    model = max((repo / "ctr").glob("*/model.onnx"))
    rows_in = realistic_rows(repo, sim, 16384 + CANDIDATES)
    ceiling, best_batch = ceiling_rows_per_s(model, rows_in, seconds / 2)
    rows = []
    with serving(repo, env) as target:
        for c in CONCURRENCY:
            r = loadtest(
                target,
                "rank-ads",
                c,
                seconds,
                sim.users,
                sim.items,
                ["--ads", str(CANDIDATES), "--slots", "3"],
            )
            engine_rows = r["achieved_rps"] * CANDIDATES
            rows.append(
                {
                    "model": label,
                    "model_type": manifest.get("model_type"),
                    "fields": n_cat,
                    "concurrency": c,
                    "requests_per_s": r["achieved_rps"],
                    "engine_rows_per_s": engine_rows,
                    "ceiling_rows_per_s": ceiling,
                    "ceiling_batch": best_batch,
                    "ratio": engine_rows / ceiling,
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "errors": r.get("errors", {}),
                }
            )
            print(
                f"{label:8s} c={c:3d} {r['achieved_rps']:8.0f} req/s {engine_rows:10.0f} rows/s "
                f"ceiling {ceiling:10.0f} ratio {engine_rows / ceiling:5.2f} "
                f"p50 {r['p50_ms']:6.1f} p99 {r['p99_ms']:6.1f} ms",
                flush=True,
            )
    return rows


def workers_suite(
    repo: Path, sim: SimulatorConfig, seconds: float, env: dict[str, str]
) -> list[dict[str, Any]]:
    """RankAds at concurrency 32: one process with all cores for onnxruntime vs two worker
    processes (SO_REUSEPORT) with one inference thread each. The load generator opens one
    connection per in-flight stream group, so the kernel spreads them over the workers."""
    cores = os.cpu_count() or 1
    rows = []
    for workers in (1, 2):
        wenv = {**env, "REACHRANK_ORT_INTRA_OP_THREADS": str(max(1, cores // workers))}
        with serving(repo, wenv, workers=workers) as target:
            r = loadtest(
                target,
                "rank-ads",
                32,
                seconds,
                sim.users,
                sim.items,
                ["--ads", str(CANDIDATES), "--slots", "3", "--processes", "2"],
            )
        rows.append(
            {
                "workers": workers,
                "requests_per_s": r["achieved_rps"],
                "rows_per_s": r["achieved_rps"] * CANDIDATES,
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "errors": r.get("errors", {}),
            }
        )
        print(
            f"workers={workers}: {r['achieved_rps']:.0f} req/s p50 {r['p50_ms']:.1f} "
            f"p99 {r['p99_ms']:.1f} ms",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small data and short runs (smoke).")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    parser.add_argument(
        "--only",
        choices=("cpu", "rank_ads", "recommend"),
        help="Run one part (default: all three).",
    )
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    sim = SimulatorConfig(
        users=2000 if not args.quick else 300,
        items=2000 if not args.quick else 200,
        days=14 if not args.quick else 5,
    )
    base = TrainConfig(
        ctr_epochs=1,
        progress=False,
        retrieval=RetrievalConfig(models=("mf",), mf_epochs=2, progress=False),
    )
    # The engine's default configuration (no REACHRANK_* overrides).
    env = {"OMP_NUM_THREADS": "1"}
    results: dict[str, Any] = {
        "candidates": CANDIDATES,
        "env": env,
        "rank_ads": [],
        "recommend": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.only in (None, "cpu"):
            # The demo repository `make serve` builds, on the engine's defaults.
            cpu = cpu_cost.measure(cpu_cost.demo_repository(work), seconds * 0.8, 8, 2000, 400, {})
            results["cpu_per_request"] = cpu
            print(cpu_cost.table(cpu), flush=True)
        if args.only in (None, "rank_ads"):
            small = build_repo(work, "lr", sim, replace(base, ctr_models=("lr",)), widen=False)
            results["rank_ads"] += rank_ads_suite("LR", small, sim, seconds, env)
            large = build_repo(
                work,
                "deepfm",
                sim,
                replace(base, ctr_models=("deepfm",), ctr_size=CTRSize(dim=16, mlp=(400, 400))),
                widen=True,
            )
            results["rank_ads"] += rank_ads_suite("DeepFM", large, sim, seconds, env)
            results["workers"] = workers_suite(large, sim, seconds, env)
        if args.only in (None, "recommend"):
            results["recommend"] = recommend_suite(work, base, seconds, env, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def recommend_suite(
    work: Path, base: TrainConfig, seconds: float, env: dict[str, str], quick: bool
) -> list[dict[str, Any]]:
    """Recommend end to end over a large catalogue at 32 in flight, with the retrieval top-k
    searched per request (the CPU default) and batched across requests (the GPU default)."""
    big = SimulatorConfig(
        users=2000 if not quick else 300,
        items=100_000 if not quick else 5000,
        days=7 if not quick else 3,
        chunk_sessions=200,
    )
    catalogue = build_repo(work, "catalogue", big, replace(base, ctr_models=("fm",)), widen=False)
    rows = []
    modes = (("one by one", {}), ("batched", {"REACHRANK_RETRIEVAL_MAX_BATCH": "64"}))
    for label, extra in modes:
        with serving(catalogue, {**env, **extra}) as target:
            r = loadtest(target, "recommend", 32, seconds, big.users, big.items, ["-k", "10"])
        rows.append(
            {
                "retrieval": label,
                "items": big.items,
                "concurrency": 32,
                "requests_per_s": r["achieved_rps"],
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "errors": r.get("errors", {}),
            }
        )
        print(
            f"Recommend over {big.items} items, c=32, retrieval {label}: "
            f"{r['achieved_rps']:.0f} req/s p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
