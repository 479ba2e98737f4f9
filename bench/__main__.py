"""`make bench` / `python -m bench [SUITE ...]`: run the benchmark suites one after another
(each writes bench/results/<suite>.json and prints its table)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Order: cheap and independent first; serving last (it trains its own repositories). `gpu`
# measures only where a CUDA device is visible (elsewhere it says so and passes).
SUITES = (
    "kernels",
    "gpu",
    "feedback",
    "erasure",
    "loadgen",
    "training",
    "campaigns",
    "ad_day",
    "ope",
    "kserve",
    "triton",
    "reload",
    "overload",
    "replicas",
    "peers",
    "serving",
)


def main() -> int:
    wanted = sys.argv[1:] or [s for s in SUITES if (HERE / f"{s}.py").exists()]
    unknown = [s for s in wanted if not (HERE / f"{s}.py").exists()]
    if unknown:
        print(
            f"unknown suite(s) {unknown}; available: {[s for s in SUITES if (HERE / f'{s}.py').exists()]}"
        )
        return 2
    failed = []
    for suite in wanted:
        print(f"\n=== bench.{suite} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"bench.{suite}"])
        print(f"=== bench.{suite}: exit {rc} after {time.perf_counter() - start:.0f} s", flush=True)
        if rc:
            failed.append(suite)
    if failed:
        print(f"failed suites: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
