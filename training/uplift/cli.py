"""`reachrank train --format campaign` (through :func:`train_campaign`), `reachrank campaign
plan` and `reachrank campaign-report`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from training.errors import InputError


def train_campaign(
    events_path: Path,
    out: Path,
    treatment_column: str | None,
    control: str | None,
    outcome_column: str | None,
    value_column: str | None,
    customers: Path | None,
    campaign_id: str | None,
    attribution_hours: float,
    uplift_learners: str,
    uplift_epochs: int,
    seed: int,
) -> None:
    """Uplift models from a randomised campaign's results (one row per customer), or from a
    feedback log's contact, holdout and purchase events joined with a customer feature table."""
    from training.uplift.candidates import CANDIDATES
    from training.uplift.data import CampaignSpec, campaign_data, read_campaign
    from training.uplift.learners import MLPConfig
    from training.uplift.train import UpliftConfig, train_uplift

    learners = tuple(n.strip() for n in uplift_learners.split(",") if n.strip())
    unknown = [n for n in learners if n not in CANDIDATES]
    if unknown or not learners:
        raise click.BadParameter(
            f"unknown learner(s) {unknown}; known: {list(CANDIDATES)}",
            param_hint="--uplift-learners",
        )
    if customers is not None:
        _from_log(
            events_path,
            out,
            customers,
            campaign_id,
            attribution_hours,
            uplift_learners,
            uplift_epochs,
            seed,
        )
        return

    missing = [
        flag
        for flag, v in (
            ("--treatment-column", treatment_column),
            ("--control", control),
            ("--outcome-column", outcome_column),
        )
        if not v
    ]
    if missing:
        raise click.UsageError(f"--format campaign needs {', '.join(missing)}")
    assert treatment_column and control and outcome_column
    spec = CampaignSpec(treatment_column, control, outcome_column, value_column)
    start = time.perf_counter()
    try:
        data = campaign_data(read_campaign(events_path, spec), spec)
        config = UpliftConfig(
            learners=learners, mlp=MLPConfig(epochs=uplift_epochs, seed=seed), seed=seed
        )
        report = train_uplift(data, out, config)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    _echo_report(report, start)


def _from_log(
    events_path: Path,
    out: Path,
    customers: Path,
    campaign_id: str | None,
    hours: float,
    learners: str,
    epochs: int,
    seed: int,
) -> None:
    import tempfile

    from training.uplift.data import scan_table
    from training.uplift.report import ReportError, campaign_from_log, read_log

    if not campaign_id:
        raise click.UsageError("--customers (a campaign from a feedback log) needs --campaign-id")
    try:
        events = read_log(events_path)
        table = campaign_from_log(events, scan_table(customers), campaign_id, hours)
    except (InputError, ReportError) as exc:
        raise click.ClickException(str(exc)) from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.parquet"
        table.write_parquet(path)
        train_campaign(
            path,
            out,
            "treatment",
            "control",
            "converted",
            "spend",
            None,
            None,
            hours,
            learners,
            epochs,
            seed,
        )


def _echo_report(report: dict[str, Any], start: float) -> None:
    for name, r in report["candidates"].items():
        v, t = r["valid"], r["test"]
        click.echo(
            f"{name:>11}: plan@{report['select_fraction']:.0%} valid {v['uplift_at_fraction']:.4f} "
            f"test {t['uplift_at_fraction']:.4f}  Qini test {t['qini']:.4f}"
        )
    click.echo(f"shipped as `uplift`: {report['winner']} ({report['why']})")
    click.echo(
        f"trained in {time.perf_counter() - start:.1f} s; bundle {report['bundle']} "
        f"(report.md, qini.png inside)"
    )


@click.group()
def campaign() -> None:
    """Campaign plans from uplift models."""


@campaign.command()
@click.option(
    "--repo", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True
)
@click.option("--model", default="uplift", show_default=True, help="Uplift model name.")
@click.option(
    "--customers",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="CSV or Parquet: user_id and the model's feature columns.",
)
@click.option("--fraction", type=float, default=None, help="Share of customers to plan for.")
@click.option("--budget", type=float, default=None, help="Total contact cost allowed.")
@click.option("--cost", "costs", multiple=True, help="TREATMENT=COST per contact (repeatable).")
@click.option(
    "--value-per-conversion",
    type=float,
    default=None,
    help="Value of one incremental conversion [the campaign's mean value, else 1].",
)
@click.option(
    "--control-fraction",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of the planned customers held out as the control group.",
)
@click.option("--campaign-id", default="", help="Seeds the control group (same id, same group).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="plan.csv to write.")
def plan(
    repo: Path,
    model: str,
    customers: Path,
    fraction: float | None,
    budget: float | None,
    costs: tuple[str, ...],
    value_per_conversion: float | None,
    control_fraction: float,
    campaign_id: str,
    out: Path,
) -> None:
    """Whom to contact, with which treatment, under a contact fraction or a budget."""
    from kernels.campaign_plan import PlanOptions
    from training.uplift.plan import find_bundle, parse_costs, plan_file, summary_lines

    try:
        bundle = find_bundle(repo, model)
        value = value_per_conversion or bundle.manifest.value_per_conversion or 1.0
        options = PlanOptions(
            fraction=fraction,
            budget=budget,
            costs=parse_costs(costs, bundle.treatments),
            value_per_conversion=float(value),
            control_fraction=control_fraction,
            campaign=campaign_id,
        )
        table, result = plan_file(bundle, customers, options)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # unreadable customer file: one line, not a traceback
        if type(exc).__module__.startswith("polars"):
            raise click.ClickException(f"{customers}: cannot read it: {exc}") from None
        raise
    out.parent.mkdir(parents=True, exist_ok=True)
    table.write_csv(out)
    summary = asdict(result.summary)
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(summary_lines(result.summary))
    click.echo(f"wrote {out} ({table.height} rows) and {out.with_suffix('.summary.json')}")


@click.command("campaign-report")
@click.option(
    "--events",
    "events_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Feedback Parquet directory or an event file with contact/holdout and purchase events.",
)
@click.option("--campaign-id", default=None, help="Only this campaign [all].")
@click.option(
    "--window-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=168.0,
    show_default=True,
    help="Purchases this long after the contact count as its outcome.",
)
@click.option("--cost", "costs", multiple=True, help="TREATMENT=COST per contact (repeatable).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write JSON here.")
def campaign_report(
    events_path: Path,
    campaign_id: str | None,
    window_hours: float,
    costs: tuple[str, ...],
    json_path: Path | None,
) -> None:
    """Measured lift: incremental conversions and revenue per treatment vs the control group."""
    from training.uplift.report import ReportError, build_campaign_reports, render_reports

    try:
        reports = build_campaign_reports(events_path, campaign_id, window_hours, costs)
    except (ReportError, InputError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render_reports(reports))
    if json_path is not None:
        json_path.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
