"""`reachrank serve`: run the gRPC server over a model repository.

Every option maps onto a field of :class:`engine.settings.Settings`; an option left out
keeps the field's environment value (``REACHRANK_<FIELD>``) or its default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from engine.settings import Settings


@click.command()
@click.option("--repo", type=click.Path(path_type=Path), help="Model repository [model_repo].")
@click.option("--host", help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, help="gRPC port [50051].")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), help="onnxruntime device [auto]."
)
@click.option("--workers", type=int, help="Server processes sharing the port [1].")
@click.option("--metrics-port", type=int, help="Prometheus /metrics port [9464; -1 disables].")
@click.option(
    "--poll-interval",
    "repo_poll_interval_s",
    type=float,
    help="Seconds between repository polls [0: off].",
)
@click.option(
    "--model-control-mode",
    type=click.Choice(["poll", "explicit"]),
    help="poll: load every model; explicit: only --load-model ones, then by Load RPCs [poll].",
)
@click.option(
    "--load-model",
    "load_models",
    multiple=True,
    help="Model to load at start under explicit model control (repeatable; '*': all).",
)
@click.option(
    "--feedback-dir",
    type=click.Path(path_type=Path),
    help="Durable feedback log for LogEvents [off].",
)
@click.option(
    "--decision-log-dir",
    type=click.Path(path_type=Path),
    help="Log sampled decisions with features and propensities (engine.decisions) [off].",
)
@click.option(
    "--shadow-log-dir",
    type=click.Path(path_type=Path),
    help="Log the experiments' shadow models' scores (engine.shadow) [off: scored, not logged].",
)
@click.option(
    "--state-store",
    help="Shared online state: embedded or redis://HOST:PORT/DB [embedded].",
)
@click.option(
    "--experiments-file",
    type=click.Path(path_type=Path, exists=True),
    help="JSON file of A/B experiments [none].",
)
@click.option(
    "--ad-campaigns-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON file of ad campaigns: budgets, pacing, frequency caps on RankAds [none].",
)
@click.option(
    "--ads-replay-time",
    is_flag=True,
    default=None,
    help="Budgets, pacing and caps on RankAdsRequest.serve_time_unix_ms (replays) [off].",
)
@click.option(
    "--otlp-endpoint",
    help="OpenTelemetry collector for decision traces, e.g. http://127.0.0.1:4317 [off].",
)
@click.option(
    "--tls-cert",
    "tls_cert_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="PEM server certificate: serve TLS only [plaintext].",
)
@click.option(
    "--tls-key",
    "tls_key_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="PEM private key of --tls-cert.",
)
@click.option(
    "--tls-client-ca",
    "tls_client_ca_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="PEM CA that must have signed every client certificate (mutual TLS) [off].",
)
@click.option(
    "--auth-tokens-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Bearer tokens, one per line; none configured = no authentication [off].",
)
@click.option(
    "--admin-tokens-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Admin bearer tokens (model management), one per line [none].",
)
@click.option(
    "--default-consent",
    type=click.Choice(["personalised", "context_only"]),
    help="Consent assumed for requests and events that carry none [personalised].",
)
@click.option(
    "--forgotten-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Tombstone set of users erased by ForgetUser [<repo>/forgotten.parquet].",
)
@click.option(
    "--pseudonym-key-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Secret: user ids kept at rest as HMAC-SHA256 pseudonyms [off].",
)
@click.option("--log-json", is_flag=True, default=None, help="JSON log lines.")
@click.option("--log-level", default="INFO", show_default=True)
def serve(log_level: str, **options: Any) -> None:
    """Serve ReachRank's gRPC services until SIGTERM/SIGINT."""
    overrides = {k: v for k, v in options.items() if v is not None and v != ()}
    if "load_models" in overrides:
        overrides["load_models"] = list(overrides["load_models"])
    if "metrics_port" not in overrides and "REACHRANK_METRICS_PORT" not in os.environ:
        overrides["metrics_port"] = 9464
    if overrides.get("metrics_port") == -1:
        overrides["metrics_port"] = None
    settings = Settings(**overrides)
    from engine.observability import configure_logging
    from engine.server import serve_forever
    from engine.workers import serve_workers

    configure_logging(log_level, json_format=settings.log_json)
    if settings.workers > 1:
        serve_workers(settings, log_level)
    else:
        serve_forever(settings)
