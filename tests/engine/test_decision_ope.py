"""Off-policy evaluation on the simulator through the real server (a small bench.ope): the
logger explores epsilon-greedily, clicks drawn from the ground truth come back by request id,
and `reachrank ope-report` estimates a candidate model's CTR; the truth is the candidate's
expected CTR when it serves the same requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.ope import Contexts, World, serve, server
from clients.cli import main


@pytest.fixture(scope="module")
def world(trained_repo: Path, sim_dir: Path) -> World:
    candidate = sorted(p.name for p in trained_repo.glob("ctr-*"))[0]
    return World(sim_dir, trained_repo, candidate)


def test_ope_report_estimates_a_candidates_ctr(world: World, tmp_path: Path) -> None:
    n = 3000
    contexts = Contexts.draw(world, n, seed=8)
    with server(
        world.repo,
        decision_log_dir=tmp_path / "decisions",
        feedback_dir=tmp_path / "feedback",
        live_history=False,  # the candidate then serves on the inputs the log holds
        decision_sample_rates={"rank_ads": 1.0},
        decision_seed=2,
        exploration={"rank_ads": {"method": "epsilon", "epsilon": 0.5}},
    ) as (client, _):
        # One call at a time: the exploration draws then meet the requests in a fixed order.
        serve(client, world, contexts, "log", np.random.default_rng(9).random(n), threads=1)
    with server(world.repo, ctr_model=world.candidate) as (client, _):
        truth = float(serve(client, world, contexts, "truth", threads=1)["expected"].mean())
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        [
            "ope-report",
            "--decisions", str(tmp_path / "decisions"),
            "--feedback", str(tmp_path / "feedback"),
            "--candidate", str(world.repo),
            "--model", world.candidate,
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["decisions"] == n and 0 < report["matched_share"] < 1
    clicks = report["estimates"]["clicked"]
    for name in ("snips", "dr"):
        e = clicks[name]
        assert e["low"] <= truth <= e["high"], (name, e, truth)
        assert abs(e["value"] - truth) / truth < 0.15, (name, e, truth)
    assert {"converted", "revenue"} <= set(report["estimates"])
