"""The `reachrank train` options of ``--format campaign`` (declared here, so the shared command
only gains one decorator); importing this module costs no more than click."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

CAMPAIGN_OPTIONS: tuple[Callable[[Any], Any], ...] = (
    click.option(
        "--treatment-column",
        default=None,
        help="--format campaign: the column holding each customer's randomly given arm.",
    ),
    click.option("--control", default=None, help="--format campaign: the control arm's value."),
    click.option(
        "--outcome-column", default=None, help="--format campaign: the 0/1 conversion column."
    ),
    click.option(
        "--value-column", default=None, help="--format campaign: the conversion's value (spend)."
    ),
    click.option(
        "--customers",
        type=click.Path(path_type=Path, exists=True),
        default=None,
        help="--format campaign from a feedback log: the customers' feature table (user_id + "
        "features); --events is then the log with contact, holdout and purchase events.",
    ),
    click.option("--campaign-id", default=None, help="--format campaign from a feedback log."),
    click.option(
        "--attribution-hours",
        type=click.FloatRange(min=0, min_open=True),
        default=168.0,
        show_default=True,
        help="--format campaign from a feedback log: purchases this long after the contact.",
    ),
    click.option(
        "--uplift-learners",
        default="response,t_learner,tarnet,x_learner,dr_learner,s_learner_gbdt",
        show_default=True,
        help="--format campaign: candidates (the response model is the baseline).",
    ),
    click.option(
        "--uplift-epochs",
        type=click.IntRange(min=1),
        default=40,
        show_default=True,
        help="At most; each model stops early once its held-out loss stops improving.",
    ),
)


def campaign_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(CAMPAIGN_OPTIONS):
        command = option(command)
    return command
