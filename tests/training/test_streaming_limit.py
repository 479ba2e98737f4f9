"""Training beyond memory (issue 16): the streaming trainer finishes on a log whose in-memory
size is three times the memory the training process may still take, and the same log collected
whole does not fit under that limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.training import stream_limit_child as child
from training.streaming_synth import GeneratedLog, write_generated_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# MiB the trainer may take above what it holds after the warm-up run.
BUDGET_MB = 64
# Pieces sized for the budget: 50,000 events per user partition, 16,384 CTR rows per chunk
# (and a small iALS, the trending blend's latent part, for the time it takes).
FLAGS = ("--partition-events", "50000", "--chunk-rows", "16384", "--ials-dim", "8")


def _in_memory_mb(log: Path) -> float:
    """The log's size as a Polars frame, summed part by part (never whole here either)."""
    return sum(pl.read_parquet(p).estimated_size() for p in sorted(log.glob("*.parquet"))) / 2**20


@pytest.mark.xfail(
    reason="issue 16, not met yet: the CTR part fits under the limit, then the user profiles' "
    "group-by (training.profiles.user_profiles, per-user n_unique of request_id) passes it",
    strict=False,
)
def test_a_log_three_times_the_memory_limit_trains_to_completion(tmp_path: Path) -> None:
    warm, big = tmp_path / "warm", tmp_path / "big"
    write_generated_log(
        warm,
        GeneratedLog(events=20_000, users=600, items=120, days=20, sessions_per_part=1000,
                     page=True, user_agent=True),
    )  # fmt: skip
    # Wide rows (page URL, user agent): ~200 bytes an event in memory.
    write_generated_log(
        big,
        GeneratedLog(events=1_100_000, users=1000, items=300, days=30, sessions_per_part=20_000,
                     page=True, user_agent=True),
    )  # fmt: skip
    size = _in_memory_mb(big)
    assert size >= 3 * BUDGET_MB, size
    work = tmp_path / "work"
    env = {
        **os.environ,
        **child.ENV,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, child.__file__, str(warm), str(big), str(work), str(BUDGET_MB), *FLAGS],
        env=env,
        capture_output=True,
        text=True,
    )
    steps = {}
    for line in done.stdout.splitlines():
        if line.startswith(child.PREFIX):
            step = json.loads(line.removeprefix(child.PREFIX))
            steps[step["step"]] = step
    print(steps)
    tail = done.stderr[-3000:]
    assert "warm" in steps, tail
    assert "trained" in steps, tail
    # The limit held while it trained: the data segment never passed it.
    assert steps["trained"]["VmData"] <= steps["warm"]["limit_mb"]
    report = json.loads((work / "big-repo" / "report.json").read_text())
    assert report["models"]["ctr_lr"]["auc"] > 0.6
    assert report["split"]["ctr"]["train"]["rows"] > 500_000
    assert "retrieval_trending" in report["models"]
    # Cut into user partitions, fitted a chunk at a time.
    assert len(list((work / "big-work" / "ctr" / "events").glob("users-*.parquet"))) >= 10
    # The control: collecting the log whole under the same limit fails (the process aborts),
    # so a trainer that collected it could not have finished above.
    assert "collected" not in steps, steps
    assert done.returncode != 0
