"""Uplift training, evaluation, plans and the measured-lift report: the real trainer on a small
simulated campaign with known ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from clients.cli import main
from kernels.campaign_plan import PlanError, PlanOptions, plan_campaign
from tests.campaign_data import campaign_setup
from training.uplift.metrics import policy_value, qini_coefficient, top_fraction_policy
from training.uplift.plan import find_bundle, plan_file
from training.uplift.report import build_campaign_reports
from training.uplift.simulate import oracle_conversions


def test_qini_ranks_a_perfect_score_above_random_and_a_reversed_one_below() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    tau = rng.random(n)  # the effect grows with the score
    treated = rng.random(n) < 0.5
    y = (rng.random(n) < 0.1 + 0.5 * tau * treated).astype(float)
    perfect, reverse = qini_coefficient(tau, treated, y), qini_coefficient(-tau, treated, y)
    noise = qini_coefficient(rng.random(n), treated, y)
    assert perfect > 0.015 > 0.006 > abs(noise)
    assert reverse < -0.015


def test_policy_value_by_hand() -> None:
    # Arms: 0 control (share 0.5), 1 treated (0.5). Contacted: rows 0..3 with treatment 1.
    arm = np.array([1, 1, 0, 0, 1, 0])
    y = np.array([1, 0, 1, 0, 1, 1])
    choice = np.array([1, 1, 1, 1, 0, 0])
    value = policy_value(choice, arm, y, np.array([0.5, 0.5]))
    # (1/0.5 + 0 - 1/0.5 - 0) / 6 = 0
    assert value.per_customer == pytest.approx(0.0)
    value = policy_value(np.array([1, 0, 0, 0, 0, 0]), arm, y, np.array([0.5, 0.5]))
    assert value.per_customer == pytest.approx(2 / 6)


def test_plan_never_contacts_negative_uplift_and_holds_out_a_marked_control() -> None:
    ids = [f"u{i}" for i in range(1000)]
    uplift = np.linspace(-0.2, 0.3, 1000)[:, None].repeat(2, axis=1)
    uplift[:, 1] += 0.01  # the second treatment is a little better everywhere
    plan = plan_campaign(
        ids, uplift, ["a", "b"], PlanOptions(fraction=0.5, costs=(0.0, 0.0), campaign="c1")
    )
    chosen = np.concatenate([plan.contact, plan.control])
    assert len(chosen) == 500
    assert (uplift[chosen, 1] > 0).all()
    assert set(plan.contact_treatment.tolist()) == {1}
    assert set(plan.contact).isdisjoint(plan.control)
    assert 30 <= len(plan.control) <= 70  # ~10% of 500, by hash
    again = plan_campaign(
        ids, uplift, ["a", "b"], PlanOptions(fraction=0.5, costs=(0.0, 0.0), campaign="c1")
    )
    assert np.array_equal(plan.control, again.control)  # the same campaign, the same group
    # Sleeping dogs only: nobody is worth contacting.
    none = plan_campaign(ids, -np.abs(uplift), ["a", "b"], PlanOptions(fraction=1.0, costs=(0, 0)))
    assert len(none.contact) == len(none.control) == 0


def test_plan_budget_counts_only_contacts_and_stays_within_it() -> None:
    ids = [f"u{i}" for i in range(500)]
    uplift = np.full((500, 2), 0.2)
    options = PlanOptions(budget=30.0, costs=(1.0, 3.0), value_per_conversion=10.0)
    plan = plan_campaign(ids, uplift, ["cheap", "dear"], options)
    assert plan.summary.cost <= 30.0
    assert plan.summary.contacts == 30 and set(plan.contact_treatment.tolist()) == {0}
    with pytest.raises(PlanError, match="needs a cost"):
        plan_campaign(ids, uplift, ["a", "b"], PlanOptions(budget=5.0, costs=(0.0, 0.0)))
    with pytest.raises(PlanError, match="exactly one"):
        plan_campaign(ids, uplift, ["a", "b"], PlanOptions(costs=(0.0, 0.0)))


def test_trained_plan_captures_most_of_the_oracle_and_beats_the_response_model() -> None:
    setup = campaign_setup()
    report = setup.report
    assert set(report["candidates"]) == {"response", "t_learner", "tarnet", "s_learner_gbdt"}
    assert report["winner"] in report["candidates"]
    bundle = find_bundle(setup.repo)
    assert (bundle.path / "report.md").read_text().count("qini.png") == 1
    assert (bundle.path / "qini.png").stat().st_size > 1000
    customers = setup.sim_dir / "customers.parquet"
    _, plan = plan_file(
        bundle, customers, PlanOptions(fraction=0.2, costs=(0.0, 0.0), control_fraction=0.0)
    )
    ids = pl.read_parquet(customers)["user_id"].to_list()
    truth = setup.truth_of(ids)
    captured = truth[plan.contact, plan.contact_treatment].sum()
    oracle = oracle_conversions(truth, 0.2)
    # Measured 0.66 (seeded; 1,926 training customers); the full-size goal is in bench.campaigns.
    assert captured >= 0.55 * oracle
    # The response model's pick (likely buyers) captures much less: it ranks sure things first.
    response_choice = top_fraction_policy(_response_scores(setup, bundle, customers), 0.2)
    picked = np.flatnonzero(response_choice)
    response = truth[picked, response_choice[picked] - 1].sum()
    assert captured > 1.2 * response


def _response_scores(setup, bundle, customers: Path) -> np.ndarray:
    from training.uplift.data import CampaignSpec, campaign_data, encode_frame, read_campaign
    from training.uplift.learners import MLPConfig, fit_learner, predict_uplift

    spec = CampaignSpec("treatment", "control", "converted", "spend")
    data = campaign_data(read_campaign(setup.sim_dir / "campaign.parquet", spec), spec)
    graph = fit_learner("response", data.x, data.arm, data.y, 2, MLPConfig())
    return predict_uplift(graph, encode_frame(data.schema, pl.read_parquet(customers)))


def test_campaign_plan_cli_writes_the_plan_and_refuses_bad_input(tmp_path: Path) -> None:
    setup = campaign_setup()
    runner = CliRunner()
    out = tmp_path / "plan.csv"
    args = ["campaign", "plan", "--repo", str(setup.repo), "--customers"]
    args += [str(setup.sim_dir / "customers.parquet"), "--out", str(out)]
    result = runner.invoke(main, [*args, "--fraction", "0.2", "--cost", "discount=0.5"])
    assert result.exit_code == 0, result.output
    plan = pl.read_csv(out)
    assert plan.columns == ["user_id", "treatment", "expected_uplift", "expected_value", "group"]
    assert set(plan["group"]) == {"contact", "control"}
    assert plan.height <= round(0.2 * pl.read_parquet(setup.sim_dir / "customers.parquet").height)
    assert (plan["expected_value"] > 0).all()
    for bad, says in [
        (["--fraction", "0.2", "--cost", "sms=1"], "unknown treatment 'sms'"),
        (["--fraction", "0.2", "--budget", "5"], "exactly one"),
        (["--budget", "5"], "needs a cost"),
        (["--fraction", "0.2", "--cost", "email"], "TREATMENT=COST"),
    ]:
        result = runner.invoke(main, [*args, *bad])
        assert result.exit_code == 1
        assert says in result.output and len(result.output.strip().splitlines()) == 1


def test_train_format_campaign_refuses_bad_files_in_one_line(tmp_path: Path) -> None:
    setup = campaign_setup()
    base = ["train", "--format", "campaign", "--out", str(tmp_path / "r"), "--events"]
    campaign = str(setup.sim_dir / "campaign.parquet")
    runner = CliRunner()
    cases = [
        (
            [
                campaign,
                "--treatment-column",
                "arm",
                "--control",
                "control",
                "--outcome-column",
                "converted",
            ],
            "no column(s) ['arm']",
        ),
        (
            [
                campaign,
                "--treatment-column",
                "treatment",
                "--control",
                "holdout",
                "--outcome-column",
                "converted",
            ],
            "control value 'holdout' never occurs",
        ),
        (
            [
                campaign,
                "--treatment-column",
                "treatment",
                "--control",
                "control",
                "--outcome-column",
                "spend",
            ],
            "must be 0/1",
        ),
    ]
    for extra, says in cases:
        result = runner.invoke(main, [*base, *extra])
        assert result.exit_code == 1, result.output
        assert says in result.output and len(result.output.strip().splitlines()) == 1


def test_campaign_report_measures_lift_against_the_control_group(tmp_path: Path) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    # 100 contacted with email (40 buy within the window), 100 held out (10 buy); 5 purchases
    # after the window do not count.
    for i in range(100):
        rows.append((f"c{i}", "email", "contact", 0, None))
        if i < 40:
            rows.append((f"c{i}", "p", "purchase", 2, 50.0))
        rows.append((f"h{i}", "email", "holdout", 0, None))
        if i < 10:
            rows.append((f"h{i}", "p", "purchase", 2, 50.0))
        if i >= 90:
            rows.append((f"h{i}", "p", "purchase", 400, 50.0))
    frame = (
        pl.DataFrame(rows, schema=["user_id", "item_id", "event", "hours", "value"], orient="row")
        .with_columns(
            (pl.lit(t0) + pl.duration(hours=pl.col("hours"))).alias("ts"),
            pl.lit("spring").alias("campaign"),
        )
        .drop("hours")
    )
    frame.write_parquet(tmp_path / "log.parquet")
    (report,) = build_campaign_reports(tmp_path / "log.parquet", None, 168.0, ["email=1"])
    assert report.control_users == 100 and report.control_conversions == 10
    (email,) = report.treatments
    assert email.incremental_conversions.value == pytest.approx(30.0)
    assert email.incremental_conversions.low < 30 < email.incremental_conversions.high
    assert email.incremental_conversions.low > 15
    assert email.incremental_revenue.value == pytest.approx(1500.0)
    assert email.roi == pytest.approx((1500.0 - 100.0) / 100.0)
    result = CliRunner().invoke(
        main, ["campaign-report", "--events", str(tmp_path / "log.parquet")]
    )
    assert result.exit_code == 0 and "incremental conversions 30.0" in result.output
    result = CliRunner().invoke(
        main, ["campaign-report", "--events", str(tmp_path / "log.parquet"), "--campaign-id", "x"]
    )
    assert result.exit_code == 1 and "no contact or holdout events" in result.output


@pytest.mark.slow  # trains twice
def test_the_feedback_log_feeds_the_same_trainer(tmp_path: Path) -> None:
    """Contacts and holdouts of a campaign, joined with purchases within the attribution
    window, give the campaign table back; `train --format campaign --customers` trains on it."""
    from training.uplift.report import campaign_from_log, read_log

    setup = campaign_setup()
    campaign = pl.read_parquet(setup.sim_dir / "campaign.parquet")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    assigned = campaign.select(
        "user_id",
        pl.when(pl.col("treatment") == "control")
        .then(pl.lit("email"))
        .otherwise("treatment")
        .alias("item_id"),
        pl.when(pl.col("treatment") == "control")
        .then(pl.lit("holdout"))
        .otherwise(pl.lit("contact"))
        .alias("event"),
        pl.lit(t0).alias("ts"),
        pl.lit(None, dtype=pl.Float64).alias("value"),
    )
    bought = campaign.filter(pl.col("converted") == 1).select(
        "user_id",
        pl.lit("i1").alias("item_id"),
        pl.lit("purchase").alias("event"),
        pl.lit(t0 + timedelta(hours=5)).alias("ts"),
        pl.col("spend").alias("value"),
    )
    late = bought.with_columns(pl.lit(t0 + timedelta(days=30)).alias("ts"))  # outside 168 h
    log = pl.concat([assigned, bought, late]).with_columns(pl.lit("c9").alias("campaign"))
    log.write_parquet(tmp_path / "log.parquet")
    customers = campaign.drop("treatment", "converted", "spend")
    customers.write_parquet(tmp_path / "customers.parquet")
    table = campaign_from_log(read_log(tmp_path / "log.parquet"), customers.lazy(), "c9", 168.0)
    merged = table.join(campaign, on="user_id", suffix="_given")
    assert merged.height == campaign.height
    assert (merged["treatment"] == merged["treatment_given"]).all()
    assert (merged["converted"] == merged["converted_given"]).all()
    args = ["train", "--format", "campaign", "--events", str(tmp_path / "log.parquet")]
    args += ["--customers", str(tmp_path / "customers.parquet"), "--campaign-id", "c9"]
    args += ["--out", str(tmp_path / "repo"), "--uplift-learners", "t_learner,tarnet"]
    result = CliRunner().invoke(main, [*args, "--uplift-epochs", "5"])
    assert result.exit_code == 0, result.output
    assert "shipped as `uplift`" in result.output
    assert find_bundle(tmp_path / "repo").treatments == ["discount", "email"]
    result = CliRunner().invoke(main, [*args[:-2], "--campaign-id", "nope"])
    assert (
        result.exit_code == 1 and "no contact or holdout events of campaign 'nope'" in result.output
    )
