"""The memory-limited trainer of ``test_streaming_limit.py``, run as a child process.

It trains a small log first (imports, Numba's kernels, thread pools and allocator arenas
warmed up), then caps its data segment (``RLIMIT_DATA``: heap and private mappings, what
Polars' and torch's allocations take) at what it holds plus a budget, trains the large log with
the streaming trainer, and last tries to collect the large log whole, which must fail under the
cap. It prints one JSON line per step; ``python stream_limit_child.py WARM_LOG BIG_LOG WORK
BUDGET_MB [trainer flags...]``.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

# What the child runs with: one thread per pool, and allocators that give freed memory back
# (jemalloc in Polars keeps unmapped ranges reserved by default, glibc grows arenas), so that
# the process's data size follows what it holds.
ENV: dict[str, str] = {
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "_RJEM_MALLOC_CONF": "retain:false,dirty_decay_ms:0,muzzy_decay_ms:0,background_thread:false",
}
# Marks the lines this child prints (the trainer prints its own JSON).
PREFIX = "stream-limit: "
COMMON: tuple[str, ...] = (
    "--ctr-model", "lr", "--ctr-epochs", "1", "--retrieval-models", "trending",
    "--budget-minutes", "5", "--quiet",
)  # fmt: skip


def status() -> dict[str, int]:
    """VmData, VmRSS and VmHWM of this process in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmData", "VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024
    return out


def emit(**fields: Any) -> None:
    print(PREFIX + json.dumps(fields), flush=True)


def main(argv: list[str]) -> None:
    warm, big, work, budget = argv[0], argv[1], Path(argv[2]), int(argv[3])
    flags = argv[4:]
    from training.cli import train

    def run(log: str, name: str) -> None:
        out, work_dir = str(work / f"{name}-repo"), str(work / f"{name}-work")
        args = ["--events", log, "--out", out, "--work-dir", work_dir, *COMMON, *flags]
        train.main(args, standalone_mode=False)

    run(warm, "warm")
    before = status()
    limit = (before["VmData"] + budget) * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    emit(step="warm", limit_mb=limit // 2**20, **before)
    run(big, "big")
    emit(step="trained", **status())
    import polars as pl

    # The control: the same log collected whole does not fit under the cap (Polars aborts the
    # process on a failed allocation), so the run above did not hold it.
    frame = pl.scan_parquet(f"{big}/*.parquet").collect()
    emit(step="collected", mb=frame.estimated_size() // 2**20, **status())


if __name__ == "__main__":
    main(sys.argv[1:])
