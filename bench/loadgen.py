"""How many requests/s `reachrank loadtest` drives against a trivial endpoint on this machine.

Starts `bench/trivial_endpoint.py` (or the Node one with --node: it answers faster than a
Python server, so the generator becomes the limit), runs closed- and open-loop loads, and
writes bench/results/loadgen.json. The generator's CPU per request is the capacity figure
that does not depend on the server: 1e6 / µs = requests/s one generator core can drive.

    python -m bench.loadgen [--seconds 5] [--node DIR_WITH_GRPC_JS] [--loop uvloop]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOADTEST = [sys.executable, "-c", "from clients.cli import main; main()", "loadtest"]
CLOSED = [1, 4, 16, 64]
OPEN = [1000, 2000, 4000]


def start_endpoint(node_modules: Path | None) -> tuple[subprocess.Popen, int]:
    if node_modules is not None:
        command = ["node", str(ROOT / "bench" / "trivial_endpoint.js"), "0"]
        env = os.environ | {"NODE_PATH": str(node_modules)}
    else:
        command = [sys.executable, "-m", "bench.trivial_endpoint"]
        env = dict(os.environ)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def run(port: int, mode: list[str], seconds: float, loop: str) -> dict:
    command = [
        *LOADTEST, "--target", f"127.0.0.1:{port}", "--rpc", "health", *mode,
        "--duration", str(seconds), "--warmup", "1", "--quiet", "--json", "-", "--loop", loop,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--node", type=Path, help="node_modules folder holding @grpc/grpc-js")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loadgen.json")
    args = parser.parse_args()

    endpoint, port = start_endpoint(args.node)
    rows = []
    try:
        modes = [["--concurrency", str(c)] for c in CLOSED] + [["--rate", str(r)] for r in OPEN]
        for mode in modes:
            result = run(port, mode, args.seconds, args.loop)
            row = {
                "mode": " ".join(mode).removeprefix("--"),
                **{k: result[k] for k in ("achieved_rps", "p50_ms", "p99_ms", "error_count")},
                "generator_cpu_us": result["client_cpu_us_per_request"],
            }
            rows.append(row)
            print(
                f"{row['mode']:16s} {row['achieved_rps']:9,.0f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                f"p99 {row['p99_ms']:8.2f} ms  errors {row['error_count']}  "
                f"generator {row['generator_cpu_us']:6.1f} µs/req",
                flush=True,
            )
    finally:
        endpoint.terminate()
        endpoint.wait()
    endpoint_name = "node grpc-js" if args.node else "python grpcio"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"endpoint": endpoint_name, "loop": args.loop, "runs": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
