"""Campaign results from the feedback log, and the measured-lift report.

Event conventions (the feedback log's columns; ``campaign`` is a context key):

- ``contact``: the user was contacted; ``item_id`` = the treatment, context ``campaign``.
- ``holdout``: the user was planned but held out as control; ``item_id`` = the treatment the
  plan would have given them (the control group of that treatment).
- ``purchase``: a conversion; ``value`` = its revenue.

A user's outcome in a campaign is whether they purchased within ``window_hours`` after their
first contact/holdout event of it (and the revenue of those purchases): the same rule for both
arms, so the control group's rate is what the contacted would have done without contact.

The report, per campaign and treatment against its control group (the held-out users the plan
meant for that treatment, or every held-out user when fewer than two were): conversion rates, the
incremental conversions ``(rate_t - rate_c) * n_t`` and revenue ``(rev_t - rev_c) * n_t`` with
95% normal intervals (difference of two independent means), the contacts' cost and ROI after
cost ``(incremental revenue - cost) / cost``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from training.ab_stats import z_quantile
from training.errors import InputError

ASSIGNMENT_EVENTS = ("contact", "holdout")
CONTROL_EVENT = "holdout"


class ReportError(ValueError):
    """The events hold no campaign to report (no contact/holdout events, no control, ...)."""


def read_log(path: Path) -> pl.LazyFrame:
    """A feedback log (its Parquet folder) or an event file, every event type kept (the
    trainer's event reader keeps only impressions, clicks, purchases and ratings)."""
    from training.uplift.data import scan_table

    lf = scan_table(path)
    names = lf.collect_schema().names()
    missing = [c for c in ("user_id", "item_id", "event", "ts") if c not in names]
    if missing:
        raise InputError(f"{path}: no column(s) {missing}; the file has {names}")
    value = pl.col("value").cast(pl.Float64) if "value" in names else pl.lit(0.0)
    return lf.with_columns(
        pl.col("user_id", "item_id", "event").cast(pl.String), value.alias("value")
    )


def campaign_outcomes(
    events: pl.LazyFrame, window_hours: float, campaign: str | None = None
) -> pl.LazyFrame:
    """One row per (campaign, user_id): ``treatment``, ``is_control``, ``converted`` (0/1) and
    ``spend`` within the attribution window after the user's first assignment."""
    names = events.collect_schema().names()
    if "campaign" not in names:
        raise ReportError(
            "the events carry no `campaign` column: log contact and holdout events with "
            "context {'campaign': <id>}"
        )
    assigned = events.filter(pl.col("event").is_in(ASSIGNMENT_EVENTS))
    if campaign is not None:
        assigned = assigned.filter(pl.col("campaign") == campaign)
    first = (
        assigned.sort("ts")
        .group_by("campaign", "user_id")
        .agg(
            pl.col("ts").first().alias("assigned_at"),
            pl.col("item_id").first().alias("treatment"),
            (pl.col("event").first() == CONTROL_EVENT).alias("is_control"),
        )
    )
    purchases = events.filter(pl.col("event") == "purchase").select(
        "user_id", pl.col("ts").alias("bought_at"), pl.col("value").fill_null(0.0)
    )
    window = pl.duration(microseconds=int(window_hours * 3600 * 1_000_000))
    hits = (
        first.join(purchases, on="user_id", how="inner")
        .filter(
            (pl.col("bought_at") > pl.col("assigned_at"))
            & (pl.col("bought_at") <= pl.col("assigned_at") + window)
        )
        .group_by("campaign", "user_id")
        .agg(pl.len().alias("_purchases"), pl.col("value").sum().alias("spend"))
    )
    return first.join(hits, on=["campaign", "user_id"], how="left").select(
        "campaign",
        "user_id",
        "treatment",
        "is_control",
        (pl.col("_purchases").fill_null(0) > 0).cast(pl.Int8).alias("converted"),
        pl.col("spend").fill_null(0.0),
    )


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class TreatmentLift:
    treatment: str
    users: int
    conversions: int
    rate: float
    revenue: float
    incremental_conversions: Interval
    incremental_revenue: Interval
    cost: float
    # (incremental revenue - cost) / cost; NaN without a cost.
    roi: float


@dataclass(frozen=True)
class CampaignReport:
    campaign: str
    control_users: int
    control_conversions: int
    control_rate: float
    treatments: list[TreatmentLift]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        for t in d["treatments"]:
            if isinstance(t["roi"], float) and math.isnan(t["roi"]):
                t["roi"] = None
        return d


def _mean_var(frame: pl.DataFrame, column: str) -> tuple[float, float]:
    x = frame[column].cast(pl.Float64)
    return float(x.mean() or 0.0), float(x.var() or 0.0) if frame.height > 1 else 0.0


def _lift(
    name: str, treated: pl.DataFrame, control: pl.DataFrame, cost_per_contact: float
) -> TreatmentLift:
    z = z_quantile(0.05)
    n_t, n_c = treated.height, control.height
    out = {}
    for column in ("converted", "spend"):
        mt, vt = _mean_var(treated, column)
        mc, vc = _mean_var(control, column)
        se = math.sqrt(vt / n_t + vc / n_c)
        out[column] = Interval((mt - mc) * n_t, (mt - mc - z * se) * n_t, (mt - mc + z * se) * n_t)
    cost = cost_per_contact * n_t
    return TreatmentLift(
        treatment=name,
        users=n_t,
        conversions=int(treated["converted"].sum()),
        rate=float(treated["converted"].mean() or 0.0),
        revenue=float(treated["spend"].sum()),
        incremental_conversions=out["converted"],
        incremental_revenue=out["spend"],
        cost=cost,
        roi=(out["spend"].value - cost) / cost if cost > 0 else math.nan,
    )


def campaign_from_log(
    events: pl.LazyFrame,
    customers: pl.LazyFrame,
    campaign: str,
    window_hours: float,
    control: str = "control",
) -> pl.DataFrame:
    """The campaign table the uplift trainer reads (``user_id, treatment, converted, spend`` and
    the customers' feature columns) from a feedback log's contacts, holdouts and purchases."""
    outcomes = campaign_outcomes(events, window_hours, campaign).collect()
    if outcomes.height == 0:
        raise ReportError(f"no contact or holdout events of campaign {campaign!r}")
    table = outcomes.select(
        "user_id",
        pl.when(pl.col("is_control"))
        .then(pl.lit(control))
        .otherwise("treatment")
        .alias("treatment"),
        "converted",
        "spend",
    )
    features = customers.with_columns(pl.col("user_id").cast(pl.String)).collect()
    return table.join(features, on="user_id", how="inner")


def parse_cost_pairs(costs: Sequence[str]) -> dict[str, float]:
    parsed = {}
    for item in costs:
        name, sep, number = item.partition("=")
        try:
            parsed[name] = float(number) if sep and name else math.nan
        except ValueError:
            parsed[name] = math.nan
        if not math.isfinite(parsed[name]) or parsed[name] < 0:
            raise InputError(f"--cost {item!r}: write TREATMENT=COST with a cost >= 0")
    return parsed


def build_campaign_reports(
    events_path: Path, campaign: str | None, window_hours: float, costs: Sequence[str]
) -> list[CampaignReport]:
    cost_of = parse_cost_pairs(costs)
    events = read_log(events_path)
    outcomes = campaign_outcomes(events, window_hours, campaign).collect()
    if outcomes.height == 0:
        which = f"campaign {campaign!r}" if campaign else "any campaign"
        raise ReportError(f"{events_path}: no contact or holdout events of {which}")
    reports = []
    for (name,), frame in sorted(outcomes.group_by("campaign"), key=lambda g: str(g[0][0])):
        control = frame.filter(pl.col("is_control"))
        if control.height < 2:
            raise ReportError(
                f"campaign {name!r}: {control.height} control user(s); measured lift needs a "
                "held-out control group (holdout events)"
            )
        lifts = []
        treated = frame.filter(~pl.col("is_control"))
        for (t,), part in sorted(treated.group_by("treatment"), key=lambda g: str(g[0][0])):
            own = control.filter(pl.col("treatment") == t)
            lifts.append(_lift(t, part, own if own.height >= 2 else control, cost_of.get(t, 0.0)))
        reports.append(
            CampaignReport(
                campaign=str(name),
                control_users=control.height,
                control_conversions=int(control["converted"].sum()),
                control_rate=float(control["converted"].mean() or 0.0),
                treatments=lifts,
            )
        )
    return reports


def render_reports(reports: Sequence[CampaignReport]) -> str:
    lines = []
    for r in reports:
        lines.append(
            f"campaign {r.campaign}: control {r.control_users} users, conversion "
            f"{r.control_rate:.2%}"
        )
        for t in r.treatments:
            c, v = t.incremental_conversions, t.incremental_revenue
            roi = "n/a" if math.isnan(t.roi) else f"{t.roi:.2f}"
            lines.append(
                f"  {t.treatment}: {t.users} contacted, conversion {t.rate:.2%}; incremental "
                f"conversions {c.value:.1f} [{c.low:.1f}, {c.high:.1f}], revenue {v.value:.2f} "
                f"[{v.low:.2f}, {v.high:.2f}]; cost {t.cost:.2f}; ROI {roi}"
            )
    return "\n".join(lines)
