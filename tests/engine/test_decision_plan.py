"""Campaigns.Plan decisions in the decision log: the planned users in plan order with their
treatments and contact propensity 1 - control_fraction, the held-out controls at position 0
with propensity control_fraction, under the call's request id."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from clients import ReachRankClient
from engine.server import start_server
from engine.settings import Settings
from tests.campaign_data import campaign_setup

pytestmark = pytest.mark.slow  # trains the uplift models first


def test_a_plan_is_logged_with_its_holdout_propensities(tmp_path: Path) -> None:
    setup = campaign_setup()
    running = start_server(
        Settings(repo=setup.repo, port=0, decision_log_dir=tmp_path / "decisions")
    )
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            client.wait_ready(timeout=30)
            plan = client.plan_campaign(
                "spring", fraction=0.1, control_fraction=0.2, request_id="plan-1"
            )
    finally:
        running.stop(0)
    rows = pl.read_parquet(tmp_path / "decisions" / "parquet" / "*.parquet").sort("candidate")
    assert (rows["request_id"] == "plan-1").all() and (rows["rpc"] == "plan").all()
    assert rows["strategy"][0] == "spring" and rows["model"][0]
    contacted = rows.filter(pl.col("position") > 0).sort("position")
    assert contacted["item_id"].to_list() == list(plan.user_ids)
    assert contacted["treatment"].to_list() == list(plan.treatments)
    assert contacted["propensity"].to_list() == pytest.approx([0.8] * len(plan.user_ids))
    controls = rows.filter(pl.col("position") == 0)
    assert controls["item_id"].to_list() == list(plan.control_user_ids)
    assert controls["treatment"].to_list() == list(plan.control_treatments)
    assert controls["propensity"].to_list() == pytest.approx([0.2] * len(controls))
