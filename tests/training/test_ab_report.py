"""The A/B report: statistics against hand-computed values, verdicts on simulated logs with a
known truth, and `reachrank ab-report` on the feedback log's Parquet output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from clients.cli import main
from training.ab_report import ReportError, arm_counts, build_reports
from training.ab_stats import (
    detectable_difference,
    mean_interval,
    min_detectable_effect,
    two_proportion_ztest,
    wilson_interval,
)


def simulated_log(
    arms: dict[str, tuple[int, float, float]], seed: int = 0, experiment: str = "exp"
) -> pl.LazyFrame:
    """Events of one experiment: per variant (impressions, true CTR, true CVR); every purchase
    is worth 20."""
    rng = np.random.default_rng(seed)
    frames = []
    for variant, (impressions, ctr, cvr) in arms.items():
        clicks = rng.binomial(impressions, ctr)
        purchases = rng.binomial(clicks, cvr)
        kinds = ["impression"] * impressions + ["click"] * clicks + ["purchase"] * purchases
        frames.append(
            pl.DataFrame(
                {
                    "user_id": [f"{variant}-{i % 5000}" for i in range(len(kinds))],
                    "event": kinds,
                    "value": [20.0 if k == "purchase" else None for k in kinds],
                }
            ).with_columns(experiment=pl.lit(experiment), variant=pl.lit(variant))
        )
    return pl.concat(frames).lazy()


def test_z_test_against_a_hand_computed_value() -> None:
    # Control 100/1000, variant 130/1000: pooled p = 0.115,
    # se = sqrt(0.115 * 0.885 * (1/1000 + 1/1000)) = 0.0142671, z = 0.03 / se = 2.10274,
    # p = 2 * (1 - Phi(2.10274)) = 0.035485.
    z, p = two_proportion_ztest(100, 1000, 130, 1000)
    assert z == pytest.approx(2.10274, abs=1e-4)
    assert p == pytest.approx(0.035485, abs=1e-5)
    assert two_proportion_ztest(130, 1000, 100, 1000)[0] == pytest.approx(-z)
    assert two_proportion_ztest(0, 50, 0, 50) == (0.0, 1.0)
    assert two_proportion_ztest(0, 0, 3, 10) == (0.0, 1.0)


def test_wilson_interval_against_a_hand_computed_value() -> None:
    # 10 of 100, z = 1.959964: centre (0.1 + z²/200) / (1 + z²/100) = 0.114797,
    # half-width z sqrt(0.0009 + z²/40000) / (1 + z²/100) = 0.059568.
    low, high = wilson_interval(10, 100)
    assert low == pytest.approx(0.055229, abs=1e-6)
    assert high == pytest.approx(0.174366, abs=1e-6)
    # 0 of 20: the interval is [0, z² / (n + z²)] = [0, 0.161125].
    assert wilson_interval(0, 20) == (
        pytest.approx(0.0, abs=1e-12),
        pytest.approx(0.161125, abs=1e-5),
    )
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mean_interval_and_mde_by_hand() -> None:
    # Values 0, 0, 0, 10: mean 2.5, sample variance (100 - 4 * 6.25) / 3 = 25, se = 2.5.
    mean, low, high, se = mean_interval(10.0, 100.0, 4)
    assert (mean, se) == (2.5, pytest.approx(2.5))
    assert (low, high) == (pytest.approx(2.5 - 1.959964 * 2.5), pytest.approx(2.5 + 4.89991))
    # (1.959964 + 0.841621) * sqrt(0.1 * 0.9 * 2 / 10000) = 0.011886
    assert min_detectable_effect(0.1, 10_000, 10_000) == pytest.approx(0.011886, abs=1e-5)
    assert math.isinf(min_detectable_effect(0.1, 0, 10))
    assert detectable_difference(0.5) == pytest.approx(0.5 * 2.801585, abs=1e-6)


def test_counts_per_arm() -> None:
    log = simulated_log({"control": (200, 0.1, 0.5)}, seed=3)
    row = arm_counts(log).collect().row(0, named=True)
    events = log.collect()
    assert row["impressions"] == 200
    assert row["clicks"] == (events["event"] == "click").sum()
    assert row["revenue"] == 20.0 * row["purchases"]
    assert row["revenue_sq"] == 400.0 * row["purchases"]


def test_a_truly_better_variant_is_declared_the_winner() -> None:
    log = simulated_log({"control": (40_000, 0.05, 0.1), "B": (40_000, 0.06, 0.1)}, seed=1)
    (report,) = build_reports(log)
    assert report.status == "winner" and report.winner == "B"
    assert report.verdict.startswith("B wins on ctr")
    ctr = next(c for c in report.comparisons if c.variant == "B" and c.metric == "ctr")
    assert ctr.significant and ctr.p_value < 1e-6 and ctr.difference > 0
    b = report.arms[1].metrics["ctr"]
    assert b.low < 0.06 < b.high


def test_a_worse_only_variant_makes_the_control_win() -> None:
    log = simulated_log({"control": (40_000, 0.06, 0.1), "B": (40_000, 0.05, 0.1)}, seed=2)
    (report,) = build_reports(log)
    assert report.status == "winner" and report.winner == "control"


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_equal_arms_are_not_declared(seed: int) -> None:
    arms = {"control": (30_000, 0.05, 0.1), "B": (30_000, 0.05, 0.1), "C": (30_000, 0.05, 0.1)}
    (report,) = build_reports(simulated_log(arms, seed=seed))
    assert report.status == "too early" and report.winner is None
    assert "no significant difference in ctr" in report.verdict
    assert 0 < report.min_detectable_effect < 0.01


def test_small_samples_are_too_early_even_with_a_big_difference() -> None:
    log = simulated_log({"control": (300, 0.02, 0.1), "B": (300, 0.2, 0.1)}, seed=7)
    (report,) = build_reports(log, min_impressions=1000)
    ctr = next(c for c in report.comparisons if c.metric == "ctr")
    assert ctr.p_value < 0.001  # significant, and still not a verdict
    assert report.status == "too early"
    assert "control has 300, B has 300 impressions" in report.verdict
    assert "1,000 per variant" in report.verdict


def test_verdict_on_conversion_and_control_choice() -> None:
    log = simulated_log({"a": (30_000, 0.1, 0.10), "b": (30_000, 0.1, 0.16)}, seed=8)
    (report,) = build_reports(log, metric="cvr")
    assert report.control == "a" and report.winner == "b"
    (reverse,) = build_reports(log, metric="cvr", control="b")
    assert reverse.control == "b" and reverse.winner == "b"
    with pytest.raises(ReportError, match="control 'z'"):
        build_reports(log, control="z")
    with pytest.raises(ReportError, match="no events of experiment 'other'"):
        build_reports(log, experiment="other")
    with pytest.raises(ReportError, match="no \\['experiment', 'variant'\\] column"):
        build_reports(log.drop("experiment", "variant"))


def test_ab_report_command_on_feedback_parquet(tmp_path: Path) -> None:
    from reachrank.v1 import feedback_pb2

    from engine.feedback import FeedbackLog

    log = simulated_log({"control": (3000, 0.05, 0.2), "B": (3000, 0.12, 0.2)}, seed=9).collect()
    events = [
        feedback_pb2.FeedbackEvent(
            user_id=r["user_id"],
            item_id="i1",
            event=r["event"],
            ts_unix_ms=1_700_000_000_000,
            experiment=r["experiment"],
            variant=r["variant"],
            value=r["value"] or 0.0,
        )
        for r in log.iter_rows(named=True)
    ]
    with FeedbackLog(tmp_path / "feedback", max_segment_bytes=64 * 1024) as feedback:
        for start in range(0, len(events), 500):
            feedback.append(events[start : start + 500])
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        ["ab-report", "--events", str(tmp_path / "feedback" / "parquet"), "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "experiment exp (control: control)" in result.output
    assert "verdict: B wins on ctr" in result.output
    (saved,) = json.loads(out.read_text())
    assert saved["winner"] == "B"
    assert [a["impressions"] for a in saved["arms"]] == [3000, 3000]
    assert saved["arms"][0]["revenue"] == 20.0 * saved["arms"][0]["purchases"]


def test_verdict_on_revenue_per_impression_with_its_detectable_difference() -> None:
    log = simulated_log({"control": (40_000, 0.05, 0.10), "B": (40_000, 0.05, 0.16)}, seed=10)
    (report,) = build_reports(log, metric="revenue_per_impression")
    assert report.winner == "B"
    assert 0 < report.min_detectable_effect < 0.1
    for arm in report.arms:
        assert arm.metrics["revenue_per_impression"].value == arm.revenue / 40_000
    revenue = next(c for c in report.comparisons if c.metric == "revenue_per_impression")
    assert revenue.significant and revenue.difference > report.min_detectable_effect
