"""perf_analyzer against a Triton-layout repository, with its default random inputs (no input
file: it reads the shapes and datatypes from ModelMetadata/ModelConfig and makes the data up).

Models, built from a few ONNX nodes (tests/engine/triton_models.py): the example clients'
`simple` (INT32 [16] sum and difference, max_batch_size 8) as its config.pbtxt says (no
dynamic batching: one request per call), the same with `dynamic_batching {}`, and the same with
no config.pbtxt at all (auto-completed: max_batch_size 4, dynamic batching). Each level is one
perf_analyzer run; the three servers are measured in turn at each level, in one run, so the
comparison sees the same machine. Server CPU per request comes from /proc (utime + stime).

    python -m bench.triton [--concurrency 1,8] [--batch 1] [--window-ms 3000]

Needs what bench.kserve needs: tritonclient 2.51.0's perf_analyzer, Debian's libb64-0d and
PyPI's nvidia-cuda-runtime-cu12 (`make bench` installs them).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.kserve import RESULTS, perf_analyzer
from engine.server import start_server
from engine.settings import Settings
from tests.engine.triton_models import SIMPLE_CONFIG, save_model, simple_graph

MODELS = {
    "simple": SIMPLE_CONFIG,
    "simple_batched": SIMPLE_CONFIG.replace('"simple"', '"simple_batched"')
    + "dynamic_batching { }\n",
    "simple_auto": None,  # no config.pbtxt
}


def build(repo: Path) -> None:
    for name, config in MODELS.items():
        save_model(simple_graph(name), repo / name / "1" / "model.onnx")
        if config is not None:
            (repo / name / "config.pbtxt").write_text(config)


def run_level(
    binary: str, env: dict[str, str], port: int, model: str, args: argparse.Namespace, c: int
) -> dict[str, str]:
    out = Path(tempfile.mkdtemp()) / "pa.csv"
    command = [
        binary, "-m", model, "-i", "grpc", "-u", f"127.0.0.1:{port}", "-b", str(args.batch),
        "--concurrency-range", f"{c}:{c}", "--measurement-interval", str(args.window_ms),
        "--stability-percentage", "25", "--max-trials", "10", "-f", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"perf_analyzer failed on {model}:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    with out.open() as f:
        (row,) = list(csv.DictReader(f))
    return {**row, "model": model, "command": " ".join(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--window-ms", type=int, default=3000)
    args = parser.parse_args()
    binary, env = perf_analyzer()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        build(repo)
        running = start_server(Settings(repo=repo, host="127.0.0.1", port=0, metrics_port=None))
        try:
            rows = [
                run_level(binary, env, running.port, model, args, int(c))
                for c in args.concurrency.split(",")
                for model in MODELS
            ]
        finally:
            running.stop(0)
    (RESULTS / "triton.json").write_text(json.dumps(rows, indent=1))
    print(
        f"perf_analyzer 2.51.0, default random inputs, batch {args.batch}, "
        f"window {args.window_ms} ms; one server, models measured in turn at each level"
    )
    print("| model | in flight | infer/s | p50 µs | p99 µs | server queue / infer µs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['Concurrency']} | {float(r['Inferences/Second']):,.0f} | "
            f"{int(r['p50 latency']):,} | {int(r['p99 latency']):,} | "
            f"{r['Server Queue']} / {r['Server Compute Infer']} |"
        )


if __name__ == "__main__":
    main()
