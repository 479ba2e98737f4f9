"""`reachrank simulate` and `reachrank train`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from training.simulate import SimulatorConfig


@click.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory to write the Parquet files into.",
)
@click.option("--users", type=int, default=SimulatorConfig.users, show_default=True)
@click.option("--items", type=int, default=SimulatorConfig.items, show_default=True)
@click.option("--days", type=int, default=SimulatorConfig.days, show_default=True)
@click.option("--seed", type=int, default=SimulatorConfig.seed, show_default=True)
def simulate(out: Path, users: int, items: int, days: int, seed: int) -> None:
    """Simulate a marketplace event log with a known ground-truth click model."""
    from training.simulate import write_simulation

    start = time.perf_counter()
    counts = write_simulation(out, SimulatorConfig(users=users, items=items, days=days, seed=seed))
    click.echo(f"wrote {out} in {time.perf_counter() - start:.1f} s: {json.dumps(counts)}")


@click.command()
@click.option(
    "--events",
    "events_path",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Event log (file or directory).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(
        ["events", "simulator", "movielens", "online-retail", "criteo", "talkingdata"]
    ),
    default="events",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Model repository to write bundles into.",
)
@click.option("--ctr-model", type=click.Choice(["lr", "fm"]), default="fm", show_default=True)
@click.option("--ctr-epochs", type=int, default=3, show_default=True)
@click.option("--mf-epochs", type=int, default=20, show_default=True)
@click.option("--mf-dim", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(
    events_path: Path,
    fmt: str,
    out: Path,
    ctr_model: str,
    ctr_epochs: int,
    mf_epochs: int,
    mf_dim: int,
    seed: int,
    quiet: bool,
) -> None:
    """Train, evaluate and export models from an event log into a model repository."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    from training.pipeline import Dataset, TrainConfig, train_all
    from training.readers import read_events

    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    read = read_events(events_path, fmt)
    events, read_report = read.collect()
    click.echo(str(read_report))
    data = Dataset(
        events=events.lazy(),
        items=read.items.collect() if read.items is not None else None,
        users=read.users.collect() if read.users is not None else None,
    )
    config = TrainConfig(
        ctr_model=ctr_model,
        ctr_epochs=ctr_epochs,
        mf_epochs=mf_epochs,
        mf_dim=mf_dim,
        seed=seed,
        progress=not quiet,
    )
    report = train_all(data, out, config)
    click.echo(json.dumps(report["models"], indent=2))
    click.echo(f"trained in {time.perf_counter() - start:.1f} s; report: {out / 'report.json'}")
