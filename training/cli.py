"""`reachrank simulate` and `reachrank train`."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import click

from training.decisions_cli import DECISION_KEYS, decision_options
from training.simulate import SimulatorConfig
from training.uplift.options import campaign_options

# Kept in step with training.models.ctr.CTR_MODELS and training.retrieval (a test checks), so
# that the command line starts without importing torch.
CTR_MODEL_NAMES: tuple[str, ...] = ("dcn", "deepfm", "fm", "lr")
RETRIEVAL_MODELS: tuple[str, ...] = (
    "trending",
    "mf",
    "ials",
    "ease",
    "ease_ials",
    "trending_ease",
    "sasrec",
)
MF_EPOCHS, MF_DIM, IALS_DIM = 30, 64, 64
# What trains with no CTR flags (training.pipeline.TrainConfig.ctr_models), and the flags that
# fix a CTR setting (then the search leaves the settings alone).
CTR_DEFAULTS: tuple[str, ...] = ("lr", "fm", "deepfm", "dcn")
CTR_SETTING_FLAGS = (
    "ctr_dim",
    "ctr_mlp",
    "ctr_cross_layers",
    "ctr_epochs",
    "ctr_lr",
    "ctr_weight_decay",
)


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
@click.option(
    "--campaign",
    is_flag=True,
    help="Also a randomised campaign with known uplift (campaign.parquet, customers.parquet, "
    "campaign_truth.parquet; see training.uplift.simulate).",
)
def simulate(out: Path, users: int, items: int, days: int, seed: int, campaign: bool) -> None:
    """Simulate a marketplace event log with a known ground-truth click model."""
    from training.simulate import write_simulation

    start = time.perf_counter()
    counts = write_simulation(out, SimulatorConfig(users=users, items=items, days=days, seed=seed))
    if campaign:
        from training.uplift.simulate import CampaignConfig, write_campaign

        counts.update(write_campaign(out, CampaignConfig(seed=seed)))
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
        [
            "events",
            "simulator",
            "movielens",
            "online-retail",
            "criteo",
            "talkingdata",
            "campaign",
            "decisions",
        ]
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
@click.option(
    "--ctr-model",
    type=click.Choice(sorted(CTR_MODEL_NAMES)),
    default=None,
    help="One CTR model to train (default: all four compete; --ctr-models trains several).",
)
@click.option(
    "--ctr-models",
    default=None,
    help="Comma-separated CTR models to train and compare (default lr,fm,deepfm,dcn); the best "
    "by valid logloss ships as `ctr`, the others as `ctr-<model>`.",
)
@click.option("--ctr-dim", type=int, default=8, show_default=True, help="Embedding dimension.")
@click.option(
    "--ctr-mlp",
    default="64,32",
    show_default=True,
    help="MLP widths of DeepFM/DCN (the serving benchmark's largest: 400,400).",
)
@click.option("--ctr-cross-layers", type=int, default=2, show_default=True)
@click.option("--ctr-epochs", type=int, default=3, show_default=True)
@click.option("--ctr-lr", type=float, default=0.01, show_default=True)
@click.option("--ctr-weight-decay", type=float, default=0.0, show_default=True)
@click.option("--n-buckets", type=int, default=1 << 17, show_default=True)
@click.option(
    "--calibration", type=click.Choice(["platt", "isotonic"]), default="platt", show_default=True
)
@click.option(
    "--numeric-columns",
    default=None,
    help="Comma-separated context columns to use as numbers (default: I1..I13 for criteo).",
)
@click.option(
    "--history/--no-history",
    default=None,
    help="History features (each user's past impressions, clicks and CTR, overall and per "
    "item category). Default: on, except for criteo and talkingdata, whose click events carry "
    "the impression's time rather than the moment the label became known.",
)
@click.option(
    "--position-bias/--no-position-bias",
    default=True,
    show_default=True,
    help="Model pCTR as examination(position) x relevance when rows have several positions.",
)
@click.option(
    "--pcvr/--no-pcvr",
    default=True,
    show_default=True,
    help="When the log has purchases, fit the conversion model (ESMM, training.cvr) and ship it "
    "as every CTR graph's second output, pcvr (what CPA bids need). --no-pcvr: pCTR only "
    "(faster training, a one-output graph; CPA ads are then refused at serve time).",
)
@click.option(
    "--retrieval-models",
    default=",".join(RETRIEVAL_MODELS),
    show_default=True,
    help="Comma-separated retrieval candidates (trending = time-decayed popularity, mf = "
    "MF-BPR, ials, ease, the blends ease_ials and trending_ease = EASE + trending, and sasrec = "
    "self-attention over the user's last items, served on live clicks too); the best by valid "
    "Recall@20 ships as `retrieval`, or a simpler one shown equivalent to it on valid.",
)
@click.option("--mf-epochs", type=int, default=MF_EPOCHS, show_default=True)
@click.option("--mf-dim", type=int, default=MF_DIM, show_default=True)
@click.option("--ials-dim", type=int, default=IALS_DIM, show_default=True)
@click.option(
    "--split", type=click.Choice(["global", "per-user"]), default="global", show_default=True
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
)
@click.option(
    "--valid-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.1,
    show_default=True,
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(0.0, min_open=True),
    default=10.0,
    show_default=True,
    help="Wall-clock budget of the hyper-parameter searches: half for the CTR models' settings "
    "(without --ctr-dim/--ctr-mlp/--ctr-cross-layers/--ctr-epochs/--ctr-lr/--ctr-weight-decay "
    "each model also tries wider embeddings and weight decay), 30% for the sequence model's "
    "epochs. Every model trains at least once at its defaults.",
)
@click.option(
    "--in-memory",
    is_flag=True,
    help="Collect the whole log into memory (the path before streaming; the same models on a "
    "log that fits). Default: stream it through --work-dir (training.streaming).",
)
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the streaming trainer writes the staged log, user partitions and encoded rows "
    "(about the log's size again; default: a temporary directory beside --out, removed after).",
)
@click.option(
    "--partition-events",
    type=click.IntRange(1),
    default=1_000_000,
    show_default=True,
    help="Events per user partition: the most events a per-user query (click labels, "
    "point-in-time histories) holds in memory.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(1),
    default=1 << 19,
    show_default=True,
    help="Encoded CTR rows in memory at once while fitting (batches are drawn within a chunk).",
)
@click.option(
    "--forgotten",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Tombstone set of users erased by ForgetUser, left out of training (default: "
    "<out>/forgotten.parquet, the server's, when it exists; else $REACHRANK_FORGOTTEN_FILE).",
)
@click.option(
    "--pseudonym-key",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Secret file: key users by HMAC-SHA256 pseudonyms in the bundles (serve with the same "
    "--pseudonym-key-file). Not for a log the server already wrote pseudonymous.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@campaign_options
@decision_options
@click.pass_context
def train(
    ctx: click.Context,
    events_path: Path,
    fmt: str,
    out: Path,
    ctr_model: str | None,
    ctr_models: str | None,
    ctr_dim: int,
    ctr_mlp: str,
    ctr_cross_layers: int,
    ctr_epochs: int,
    ctr_lr: float,
    ctr_weight_decay: float,
    n_buckets: int,
    calibration: str,
    numeric_columns: str | None,
    history: bool | None,
    position_bias: bool,
    pcvr: bool,
    retrieval_models: str,
    mf_epochs: int,
    mf_dim: int,
    ials_dim: int,
    split: str,
    test_fraction: float,
    valid_fraction: float,
    budget_minutes: float,
    in_memory: bool,
    work_dir: Path | None,
    partition_events: int,
    chunk_rows: int,
    forgotten: Path | None,
    pseudonym_key: Path | None,
    seed: int,
    quiet: bool,
    **campaign: str | float | Path | None,
) -> None:
    """Train, evaluate and export models from an event log into a model repository."""
    decisions = {k: campaign.pop(k) for k in DECISION_KEYS}
    if fmt == "decisions":  # a CTR model from the server's decision log: training.decisions
        from training.decisions_cli import train_decisions

        train_decisions(
            events_path, out, ctr_model=ctr_model or "lr", seed=seed, epochs=ctr_epochs, **decisions
        )
        return
    if fmt == "campaign":  # uplift models from a randomised campaign: training.uplift
        from training.uplift.cli import train_campaign

        train_campaign(events_path, out, seed=seed, **campaign)  # type: ignore[arg-type]
        return
    if test_fraction + valid_fraction >= 1.0:
        raise click.UsageError("--test-fraction + --valid-fraction must leave some training data")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import polars as pl
    import torch

    from training.cvr import CVRConfig
    from training.errors import InputError
    from training.forgotten import FILE as FORGOTTEN_FILE
    from training.models.ctr import CTRSize
    from training.pipeline import Dataset, TrainConfig, train_all
    from training.read_ads import CRITEO_INT_COLUMNS
    from training.readers import read_events
    from training.retrieval import RetrievalConfig
    from training.simulate import GroundTruth
    from training.streaming import StreamingConfig, stage_events, stage_table

    if ctr_model and ctr_models:
        raise click.UsageError("give --ctr-model or --ctr-models, not both")
    models = _names(ctr_models) if ctr_models else ((ctr_model,) if ctr_model else CTR_DEFAULTS)
    unknown = [m for m in models if m not in CTR_MODEL_NAMES]
    if unknown:
        raise click.BadParameter(f"unknown CTR model(s) {unknown}", param_hint="--ctr-models")
    retrieval = _names(retrieval_models)
    unknown = [m for m in retrieval if m not in RETRIEVAL_MODELS]
    if unknown:
        raise click.BadParameter(
            f"unknown retrieval model(s) {unknown}", param_hint="--retrieval-models"
        )
    if numeric_columns is None:
        numeric = CRITEO_INT_COLUMNS if fmt == "criteo" else ()
    else:
        numeric = _names(numeric_columns)
    # The machine's cores, no more: oversubscribed intra-op threads slow small batches down.
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    streaming = None
    if not in_memory:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = work_dir or Path(tempfile.mkdtemp(prefix=f".{out.name}.work-", dir=out.parent))
        if work_dir is None:
            ctx.call_on_close(lambda: shutil.rmtree(work, ignore_errors=True))
        streaming = StreamingConfig(work, partition_events=partition_events, chunk_rows=chunk_rows)
    try:
        if forgotten is None and (out / FORGOTTEN_FILE).exists():
            forgotten = out / FORGOTTEN_FILE
        read = read_events(events_path, fmt, forgotten=forgotten, pseudonym_key=pseudonym_key)
        if streaming is None:
            events, read_report = read.collect()
            lazy_events = events.lazy()
        else:
            lazy_events, read_report = stage_events(read, streaming.work_dir)
        items = stage_table(read.items)
        users = stage_table(read.users)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, pl.exceptions.PolarsError) as exc:
        # Not a file of that format at all (binary, truncated Parquet, ...): say so in a line.
        raise click.ClickException(
            f"{events_path}: cannot read it as --format {fmt}: {_first_line(exc)}"
        ) from None
    click.echo(str(read_report))
    truth = None
    if fmt == "simulator" and (events_path / "ground_truth.npz").exists():
        truth = GroundTruth.load(events_path)
    data = Dataset(events=lazy_events, items=items, users=users, ground_truth=truth)
    config = TrainConfig(
        ctr_models=models,
        ctr_size=CTRSize(
            dim=ctr_dim, mlp=tuple(int(w) for w in _names(ctr_mlp)), cross_layers=ctr_cross_layers
        ),
        ctr_epochs=ctr_epochs,
        ctr_lr=ctr_lr,
        ctr_search=not any(
            ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT
            for p in CTR_SETTING_FLAGS
        ),
        budget_minutes=budget_minutes,
        ctr_weight_decay=ctr_weight_decay,
        calibration=calibration,  # type: ignore[arg-type]
        n_buckets=n_buckets,
        numeric_context=tuple(numeric),
        history=history if history is not None else fmt not in AD_FORMATS,
        position_bias=position_bias,
        cvr=CVRConfig(enabled=pcvr),
        retrieval=RetrievalConfig(
            models=retrieval,
            mf_epochs=mf_epochs,
            mf_dim=mf_dim,
            ials_dim=ials_dim,
            seed=seed,
            progress=not quiet,
        ),
        split=split,  # type: ignore[arg-type]
        test_fraction=test_fraction,
        valid_fraction=valid_fraction,
        seed=seed,
        progress=not quiet,
        streaming=streaming,
    )
    try:
        # Every collect of the trainer's queries runs on the streaming engine unless in memory.
        affinity = pl.Config(engine_affinity="streaming") if streaming else nullcontext()
        with affinity:
            report = train_all(data, out, config)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report["models"], indent=2))
    for what, name in report.get("chosen", {}).items():
        if name is None:
            continue
        why = report.get("why", {}).get(what)
        click.echo(f"shipped as `{what}`: {name}" + (f" ({why})" if why else ""))
    click.echo(
        f"trained in {time.perf_counter() - start:.1f} s; report: {out / 'report.json'}, "
        f"{out / 'report.md'}"
    )


# Readers whose click events share the impression's timestamp (see training.read_ads).
AD_FORMATS = ("criteo", "talkingdata")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())
