"""The A/B report: per experiment and variant, impressions, clicks, purchases, CTR,
conversion and revenue per impression with 95% intervals, each variant tested against the
control, and a verdict: a winner at ``alpha``, or "too early" with the reason.

Input is a conformed event log with the feedback log's ``experiment`` and ``variant``
columns. One aggregation (Polars, lazy) counts per arm; the statistics run on that small
table. Rates and their intervals:

- ``ctr`` = clicks / impressions, ``cvr`` = purchases / clicks, ``purchase_rate`` = purchases /
  impressions: Wilson score intervals; variant vs control by the pooled two-proportion z-test.
- ``revenue_per_impression`` = sum of purchase ``value`` / impressions: normal interval from
  the sum and sum of squares, treating each purchase as the revenue of one impression (all
  other impressions earn 0); variant vs control by a Welch z-test.

The verdict looks at one metric (``ctr`` by default). With several variants each is compared
with the control at ``alpha / (variants - 1)`` (Bonferroni), so adding arms does not inflate
false wins. An arm with fewer than ``min_impressions`` impressions makes it "too early"
whatever the p-values say: early peeks at small samples are where false winners come from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import polars as pl

from training.ab_stats import (
    detectable_difference,
    mean_interval,
    min_detectable_effect,
    two_proportion_ztest,
    welch_ztest,
    wilson_interval,
)

# metric -> (successes column, trials column)
RATES: dict[str, tuple[str, str]] = {
    "ctr": ("clicks", "impressions"),
    "cvr": ("purchases", "clicks"),
    "purchase_rate": ("purchases", "impressions"),
}
REVENUE = "revenue_per_impression"
METRICS = (*RATES, REVENUE)
# Power the minimum detectable effect is quoted at.
POWER = 0.8
DEFAULT_CONTROL = "control"


class ReportError(ValueError):
    """The events cannot give an A/B report (no experiment columns, unknown control, ...)."""


@dataclass(frozen=True)
class Estimate:
    """A metric of one arm with its confidence interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Arm:
    variant: str
    impressions: int
    clicks: int
    purchases: int
    revenue: float
    # Sum of squared purchase values, for the revenue interval and test.
    revenue_sq: float
    users: int
    metrics: dict[str, Estimate]

    def count(self, column: str) -> int:
        return int(getattr(self, column))

    def revenue_se(self) -> float:
        return mean_interval(self.revenue, self.revenue_sq, self.impressions)[3]


@dataclass(frozen=True)
class Comparison:
    """One variant against the control on one metric."""

    variant: str
    metric: str
    control_value: float
    value: float
    difference: float
    relative_lift: float
    z: float
    p_value: float
    significant: bool


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str
    control: str
    metric: str
    alpha: float
    arms: list[Arm]
    comparisons: list[Comparison]
    # "winner" or "too early".
    status: str
    winner: str | None
    verdict: str
    # The smallest absolute difference on `metric` these samples detect with POWER.
    min_detectable_effect: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return _finite(asdict(self))


def arm_counts(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (experiment, variant): impressions, clicks, purchases, revenue, its sum of
    squares and distinct users. Events without an experiment or variant are left out."""
    names = events.collect_schema().names()
    missing = [c for c in ("experiment", "variant") if c not in names]
    if missing:
        raise ReportError(
            f"the events have no {missing} column(s): log them through the feedback log "
            "(LogEvents with experiment and variant)"
        )
    is_purchase = pl.col("event") == "purchase"
    revenue = pl.when(is_purchase).then(pl.col("value").fill_null(0.0)).otherwise(0.0)
    return (
        events.filter(pl.col("experiment").is_not_null() & pl.col("variant").is_not_null())
        .group_by("experiment", "variant")
        .agg(
            impressions=(pl.col("event") == "impression").sum(),
            clicks=(pl.col("event") == "click").sum(),
            purchases=is_purchase.sum(),
            revenue=revenue.sum(),
            revenue_sq=(revenue * revenue).sum(),
            users=pl.col("user_id").n_unique(),
        )
        .sort("experiment", "variant")
    )


def build_reports(
    events: pl.LazyFrame,
    *,
    experiment: str | None = None,
    control: str | None = None,
    metric: str = "ctr",
    alpha: float = 0.05,
    min_impressions: int = 1000,
) -> list[ExperimentReport]:
    """A report per experiment in ``events`` (or only ``experiment``)."""
    if metric not in METRICS:
        raise ReportError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    counts = arm_counts(events)
    if experiment is not None:
        counts = counts.filter(pl.col("experiment") == experiment)
    table = counts.collect()
    if table.is_empty():
        wanted = f"experiment {experiment!r}" if experiment else "any experiment"
        raise ReportError(f"no events of {wanted} in the log")
    return [
        experiment_report(
            name,
            group.drop("experiment").to_dicts(),
            control=control,
            metric=metric,
            alpha=alpha,
            min_impressions=min_impressions,
        )
        for (name,), group in table.group_by("experiment", maintain_order=True)
    ]


def experiment_report(
    name: str,
    rows: list[dict],
    *,
    control: str | None,
    metric: str,
    alpha: float,
    min_impressions: int,
) -> ExperimentReport:
    """The report of one experiment from its per-variant counts (rows of :func:`arm_counts`)."""
    by_variant = {r["variant"]: r for r in rows}
    control = control or _default_control(list(by_variant))
    if control not in by_variant:
        raise ReportError(
            f"experiment {name!r}: control {control!r} not among variants {sorted(by_variant)}"
        )
    ordered = [by_variant[control]] + [r for v, r in by_variant.items() if v != control]
    arms = [_arm(r, alpha) for r in ordered]
    treatments = arms[1:]
    corrected = alpha / max(len(treatments), 1)
    comparisons = [_compare(arms[0], arm, m, corrected) for arm in treatments for m in METRICS]
    mde = _mde(arms, metric, corrected)
    status, winner, verdict = _verdict(arms, comparisons, metric, corrected, min_impressions)
    notes = [
        f"alpha {alpha:g} split over {len(treatments)} comparison(s): each at {corrected:.4g}",
        f"minimum detectable {metric} difference ({POWER:.0%} power): "
        + (f"{mde:.4g} absolute" if math.isfinite(mde) else "unknown (an arm has no trials)"),
    ]
    return ExperimentReport(
        name, control, metric, alpha, arms, comparisons, status, winner, verdict, mde, notes
    )


def _default_control(variants: list[str]) -> str:
    """The variant named "control", else the first by name (the log does not keep the
    experiment's variant order)."""
    return DEFAULT_CONTROL if DEFAULT_CONTROL in variants else sorted(variants)[0]


def _arm(row: dict, alpha: float) -> Arm:
    metrics = {}
    for metric, (num, den) in RATES.items():
        low, high = wilson_interval(row[num], row[den], alpha)
        rate = row[num] / row[den] if row[den] else math.nan
        metrics[metric] = Estimate(rate, low, high)
    mean, low, high, _ = mean_interval(row["revenue"], row["revenue_sq"], row["impressions"], alpha)
    metrics[REVENUE] = Estimate(mean, low, high)
    return Arm(
        row["variant"],
        row["impressions"],
        row["clicks"],
        row["purchases"],
        row["revenue"],
        row["revenue_sq"],
        row["users"],
        metrics,
    )


def _compare(control: Arm, arm: Arm, metric: str, alpha: float) -> Comparison:
    before, after = control.metrics[metric].value, arm.metrics[metric].value
    if metric == REVENUE:
        z, p = welch_ztest(before, control.revenue_se(), after, arm.revenue_se())
    else:
        num, den = RATES[metric]
        z, p = two_proportion_ztest(
            control.count(num), control.count(den), arm.count(num), arm.count(den)
        )
    lift = (after - before) / before if before else math.nan
    return Comparison(arm.variant, metric, before, after, after - before, lift, z, p, p < alpha)


def _mde(arms: list[Arm], metric: str, alpha: float) -> float:
    """The largest of the per-variant MDEs: what the experiment as a whole can detect."""
    if len(arms) < 2:
        return math.inf
    control = arms[0]
    if metric == REVENUE:
        spread = max(math.hypot(control.revenue_se(), arm.revenue_se()) for arm in arms[1:])
        return detectable_difference(spread, alpha, POWER) if math.isfinite(spread) else math.inf
    num, den = RATES[metric]
    rate = control.count(num) / control.count(den) if control.count(den) else 0.0
    return max(
        min_detectable_effect(rate, control.count(den), arm.count(den), alpha, POWER)
        for arm in arms[1:]
    )


def _verdict(
    arms: list[Arm],
    comparisons: list[Comparison],
    metric: str,
    alpha: float,
    min_impressions: int,
) -> tuple[str, str | None, str]:
    if len(arms) < 2:
        return "too early", None, f"too early: only one variant ({arms[0].variant}) was logged"
    small = [a for a in arms if a.impressions < min_impressions]
    if small:
        listed = ", ".join(f"{a.variant} has {a.impressions:,}" for a in small)
        return (
            "too early",
            None,
            f"too early: not enough data ({listed} impressions; at least "
            f"{min_impressions:,} per variant are needed)",
        )
    tests = [c for c in comparisons if c.metric == metric]
    better = [c for c in tests if c.significant and c.difference > 0]
    if better:
        best = max(better, key=lambda c: c.value)
        return "winner", best.variant, _won(best.variant, best, metric, alpha)
    if all(c.significant and c.difference < 0 for c in tests):
        weakest = min(tests, key=lambda c: c.p_value)
        return "winner", arms[0].variant, _won(arms[0].variant, weakest, metric, alpha)
    smallest = min(tests, key=lambda c: c.p_value)
    return (
        "too early",
        None,
        f"too early: no significant difference in {metric} at {alpha:.4g} "
        f"(smallest p = {smallest.p_value:.3g}, {smallest.variant} vs {arms[0].variant})",
    )


def _won(variant: str, test: Comparison, metric: str, alpha: float) -> str:
    return (
        f"{variant} wins on {metric}: {test.value:.4g} vs {test.control_value:.4g} "
        f"({test.relative_lift:+.1%} vs control, p = {test.p_value:.3g} < {alpha:.4g})"
    )


def _finite(value: object) -> object:
    """NaN and infinities as None, so the JSON is valid for strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render(reports: list[ExperimentReport]) -> str:
    """The reports as plain-text tables."""
    blocks = []
    for report in reports:
        lines = [f"experiment {report.experiment} (control: {report.control})"]
        lines.append(
            f"  {'variant':<14}{'impr':>10}{'clicks':>9}{'purch':>8}"
            f"  {'CTR [95% CI]':<26}{'CVR [95% CI]':<26}{'rev/impr [95% CI]':<28}"
        )
        for arm in report.arms:
            m = arm.metrics
            lines.append(
                f"  {arm.variant:<14}{arm.impressions:>10,}{arm.clicks:>9,}{arm.purchases:>8,}"
                f"  {_estimate(m['ctr']):<26}{_estimate(m['cvr']):<26}"
                f"{_estimate(m[REVENUE]):<28}"
            )
        for c in report.comparisons:
            mark = "*" if c.significant else " "
            lines.append(
                f"  {c.variant} vs {report.control} {c.metric:<23} diff {c.difference:+.4g}"
                f"  z {c.z:+.2f}  p {c.p_value:.3g} {mark}"
            )
        lines += [f"  note: {n}" for n in report.notes]
        lines.append(f"  verdict: {report.verdict}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _estimate(e: Estimate) -> str:
    if math.isnan(e.value):
        return "n/a"
    return f"{e.value:.4f} [{e.low:.4f}, {e.high:.4f}]"
