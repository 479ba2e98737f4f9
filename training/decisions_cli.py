"""`reachrank train --format decisions` (a CTR model from the server's decision log, the
features as served) and `reachrank ope-report` (off-policy evaluation of a candidate on it).
Importing this module costs no more than click; the work imports what it needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DECISION_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option(
        "--feedback",
        "decisions_feedback",
        type=click.Path(path_type=Path, exists=True),
        default=None,
        help="--format decisions: the feedback log (or events Parquet) whose clicks and "
        "purchases join the decisions by request id; --events is the decision log.",
    ),
    click.option(
        "--serving-repo",
        type=click.Path(path_type=Path, exists=True, file_okay=False),
        default=None,
        help="--format decisions: the repository holding the bundle that served the decisions "
        "(its schema and side tables are kept).",
    ),
)
# The keys these options add to `train`'s keyword arguments.
DECISION_KEYS = ("decisions_feedback", "serving_repo")


def decision_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(DECISION_OPTIONS):
        command = option(command)
    return command


def train_decisions(
    decisions: Path,
    out: Path,
    *,
    decisions_feedback: Path | None,
    serving_repo: Path | None,
    ctr_model: str,
    seed: int,
    epochs: int,
) -> None:
    if decisions_feedback is None or serving_repo is None:
        raise click.UsageError("--format decisions needs --feedback and --serving-repo")
    from training.decisions import read_feedback, train_from_decisions
    from training.errors import InputError, NotEnoughData
    from training.pipeline import TrainConfig

    config = TrainConfig(ctr_epochs=epochs, seed=seed, progress=False)
    try:
        result = train_from_decisions(
            decisions, read_feedback(decisions_feedback), serving_repo, out, ctr_model, config
        )
    except (InputError, NotEnoughData) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2))


@click.command("ope-report")
@click.option(
    "--decisions",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The server's decision log directory (decision_log_dir).",
)
@click.option(
    "--feedback",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="The feedback log (or events Parquet) with the clicks and purchases.",
)
@click.option(
    "--candidate",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="Repository of the candidate CTR model.",
)
@click.option("--model", default="ctr", show_default=True, help="The candidate's model name.")
@click.option("--version", type=int, default=None, help="Its version (default: the latest).")
@click.option("--rpc", type=click.Choice(["recommend", "rank_ads"]), default=None)
@click.option("--slots", type=click.IntRange(1), default=None, help="Slots to evaluate [all].")
@click.option("--level", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write JSON here.")
def ope_report(
    decisions: Path,
    feedback: Path,
    candidate: Path,
    model: str,
    version: int | None,
    rpc: str | None,
    slots: int | None,
    level: float,
    out: Path | None,
) -> None:
    """Estimate a candidate model's clicks, conversions and revenue per decision from the
    decision log (IPS, SNIPS, doubly robust), against the logging policy's."""
    from training.decisions import read_feedback
    from training.errors import InputError
    from training.ope_report import Candidate
    from training.ope_report import ope_report as report_of

    try:
        report = report_of(
            decisions,
            read_feedback(feedback),
            Candidate.load(candidate, model, version),
            rpc=rpc,
            slots=slots,
            level=level,
        )
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text + "\n")
    click.echo(
        f"{report['rpc']}: {report['decisions']} decisions, {report['slots']} slot(s), "
        f"candidate {report['candidate']} agrees with the log on "
        f"{report['matched_share']:.0%} of slots"
    )
    for reward, by in report["estimates"].items():
        line = "  ".join(
            f"{name} {e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]" for name, e in by.items()
        )
        click.echo(f"{reward:>9}: {line}")
    if "warning" in report:
        click.echo(f"warning: {report['warning']}")
