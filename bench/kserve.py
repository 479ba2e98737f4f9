"""Triton's perf_analyzer against ReachRank's KServe v2 endpoint: start a server on a free
loopback port over a model repository, feed perf_analyzer real CTR feature rows, sweep the
number of requests in flight, and print a Markdown table (client throughput and latency
percentiles, and the server-side breakdown perf_analyzer reads from ModelStatistics).

    python -m bench.kserve [--repo model_repo] [--batch 64] [--concurrency 1,2,4,8,16,32]
                           [--batching on,off]

Needs the perf_analyzer binary from tritonclient 2.51.0's wheel, Debian's libb64-0d, and
libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 (the `bench` extra), found by this script.
Without --repo it simulates a marketplace and trains a small repository first (about a minute).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.models.ctr import CTRModel
from engine.server import start_server
from engine.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
# perf_analyzer CSV columns (microseconds) shown in the table, with their headings.
CLIENT = [
    ("p50 latency", "p50"),
    ("p90 latency", "p90"),
    ("p95 latency", "p95"),
    ("p99 latency", "p99"),
]
SERVER = [
    ("Server Queue", "queue"),
    ("Server Compute Input", "compute input"),
    ("Server Compute Infer", "compute infer"),
    ("Server Compute Output", "compute output"),
]


def perf_analyzer() -> tuple[str, dict[str, str]]:
    """The binary and an environment whose LD_LIBRARY_PATH has libcudart.so.12."""
    binary = shutil.which("perf_analyzer") or str(Path(sys.executable).with_name("perf_analyzer"))
    if not Path(binary).exists():
        sys.exit("perf_analyzer not found: pip install --no-deps tritonclient==2.51.0")
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("libcudart.so.12 not found: pip install nvidia-cuda-runtime-cu12")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH")) if p)
    return binary, env


def train_repository(workdir: Path) -> Path:
    """A small repository from the simulator, through the real CLI."""
    events, repo = workdir / "events", workdir / "repo"
    cli = str(Path(sys.executable).with_name("reachrank"))
    subprocess.run([cli, "simulate", "--out", str(events)], check=True)
    subprocess.run(
        [
            cli,
            "train",
            "--events",
            str(events),
            "--format",
            "simulator",
            "--out",
            str(repo),
            "--quiet",
        ],
        check=True,
    )
    return repo


def input_data(model: CTRModel, rows: int, seed: int = 0) -> dict:
    """perf_analyzer's JSON input: one entry per row (it cuts batches from consecutive
    entries), real (user, item) feature rows rather than random ids the model would refuse."""
    rng = np.random.default_rng(seed)
    users = list(model.user_row)
    data = []
    for user in rng.choice(users, max(1, rows // 64)):
        items = rng.integers(0, model.store.n_items, 64)
        cat, num = model.features(str(user), items, {})
        data.extend(
            {
                "cat": {"content": c.tolist(), "shape": [len(c)]},
                "num": {"content": n.tolist(), "shape": [len(n)]},
            }
            for c, n in zip(cat, num, strict=True)
        )
    return {"data": data}


def run_level(
    binary: str,
    env: dict[str, str],
    port: int,
    args: argparse.Namespace,
    data: Path,
    concurrency: int,
    log: Path,
    label: str,
) -> dict[str, str]:
    """One perf_analyzer measurement; the CSV row plus the label and the machine's load."""
    csv_path = data.with_name(f"{label}-c{concurrency}.csv")
    command = [
        binary,
        "-m", args.model,
        "-i", "grpc",
        "-u", f"127.0.0.1:{port}",
        "-b", str(args.batch),
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(args.window_ms),
        "--stability-percentage", str(args.stability),
        "--max-trials", "20",
        "--input-data", str(data),
        "-f", str(csv_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        sys.exit(f"perf_analyzer failed (see {log}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    with csv_path.open() as f:
        (row,) = list(csv.DictReader(f))
    return {**row, "batching": label, "load": f"{os.getloadavg()[0]:.1f}"}


def table(rows: list[dict[str, str]], batch: int) -> str:
    head = [
        "batching",
        "in flight",
        "infer/s",
        "requests/s",
        *(h + " µs" for _, h in CLIENT),
        "server µs: " + " / ".join(h for _, h in SERVER),
        "load avg",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rate = float(r["Inferences/Second"])
        cells = [r["batching"], r["Concurrency"], f"{rate:,.0f}", f"{rate / batch:,.0f}"]
        cells += [f"{int(r[c]):,}" for c, _ in CLIENT]
        cells += [" / ".join(r[c] for c, _ in SERVER), r["load"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="model repository (default: train a small one)")
    parser.add_argument("--model", default="ctr")
    parser.add_argument("--batch", type=int, default=64, help="rows per request (perf_analyzer -b)")
    parser.add_argument(
        "--concurrency", default="1,2,4,8,16,32", help="requests in flight, comma-separated"
    )
    parser.add_argument(
        "--window-ms", type=int, default=5000, help="perf_analyzer measurement window"
    )
    parser.add_argument(
        "--batching", default="on,off", help="server-side dynamic batching settings to compare"
    )
    # perf_analyzer's default (10 %) rarely settles on a shared 2-core machine.
    parser.add_argument("--stability", type=int, default=25, help="stability percentage")
    args = parser.parse_args()
    binary, env = perf_analyzer()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo = args.repo or train_repository(workdir)
        # One server per batching setting, measured in turn at each level, so that the
        # comparison sees the same machine (other processes' load drifts over minutes).
        servers = {
            label: start_server(
                Settings(repo=repo, host="127.0.0.1", port=0, batching=label == "on")
            )
            for label in args.batching.split(",")
        }
        try:
            model = next(iter(servers.values())).registry.get(args.model)
            if not isinstance(model, CTRModel):
                sys.exit(f"{args.model} is not a CTR model")
            data = workdir / "input.json"
            data.write_text(json.dumps(input_data(model, rows=4096)))
            log = RESULTS / "kserve_perf_analyzer.log"
            log.write_text("")
            rows = [
                run_level(binary, env, running.port, args, data, int(c), log, label)
                for c in args.concurrency.split(",")
                for label, running in servers.items()
            ]
        finally:
            for running in servers.values():
                running.stop(0)
    (RESULTS / "kserve_perf_analyzer.json").write_text(json.dumps(rows, indent=1))
    print(
        f"perf_analyzer 2.51.0, model {args.model}, batch {args.batch}, "
        f"window {args.window_ms} ms, stability {args.stability} %"
    )
    print(table(sorted(rows, key=lambda r: r["batching"] != "on"), args.batch))


if __name__ == "__main__":
    main()
