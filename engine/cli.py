"""`reachrank serve`: run the gRPC server over a model repository."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from engine.settings import Settings


@click.command()
@click.option(
    "--repo",
    type=click.Path(path_type=Path),
    default=None,
    help="Model repository [REACHRANK_REPO, model_repo].",
)
@click.option("--host", default=None, help="Address to listen on [REACHRANK_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="gRPC port [REACHRANK_PORT, 50051].")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="onnxruntime device [auto].",
)
@click.option(
    "--feedback-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Durable feedback log for LogEvents [REACHRANK_FEEDBACK_DIR, off].",
)
@click.option(
    "--experiments-file",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="JSON file of A/B experiments [REACHRANK_EXPERIMENTS_FILE, none].",
)
@click.option("--log-level", default="INFO", show_default=True)
def serve(
    repo: Path | None,
    host: str | None,
    port: int | None,
    device: str | None,
    feedback_dir: Path | None,
    experiments_file: Path | None,
    log_level: str,
) -> None:
    """Serve Recommend, RankAds and Score over gRPC until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {
        k: v
        for k, v in {
            "repo": repo,
            "host": host,
            "port": port,
            "device": device,
            "feedback_dir": feedback_dir,
            "experiments_file": experiments_file,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    from engine.server import serve_forever

    serve_forever(settings)
