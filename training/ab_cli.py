"""`reachrank ab-report`: the A/B report of a feedback log (see :mod:`training.ab_report`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from training.ab_report import METRICS, ReportError, build_reports, render


@click.command()
@click.option(
    "--events",
    "events_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Feedback Parquet directory (<feedback-dir>/parquet) or an event file.",
)
@click.option("--experiment", default=None, help="Only this experiment [all].")
@click.option("--control", default=None, help='Control variant ["control", else first by name].')
@click.option(
    "--metric",
    type=click.Choice(list(METRICS)),
    default="ctr",
    show_default=True,
    help="Metric the verdict is based on.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Significance level (split over the variants compared with the control).",
)
@click.option(
    "--min-impressions",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Impressions every variant needs before a verdict.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write JSON here.")
def ab_report(
    events_path: Path,
    experiment: str | None,
    control: str | None,
    metric: str,
    alpha: float,
    min_impressions: int,
    json_path: Path | None,
) -> None:
    """Per-variant CTR, conversion and revenue with intervals, tests and a verdict."""
    from training.readers import read_events

    result = read_events(events_path, "events")
    try:
        reports = build_reports(
            result.events,
            experiment=experiment,
            control=control,
            metric=metric,
            alpha=alpha,
            min_impressions=min_impressions,
        )
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render(reports))
    if json_path is not None:
        json_path.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
