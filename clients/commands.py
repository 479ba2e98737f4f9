"""`reachrank client ...`: call a running server from the shell and print a table or JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from clients.client import ReachRankClient
from clients.errors import ReachRankError
from clients.table import format_table
from clients.types import AdBid, ModelInfo

DEFAULT_TARGET = "127.0.0.1:50051"


def _key_values(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        pairs[key] = text
    return pairs


def _ads(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[AdBid]:
    ads = []
    for value in values:
        ad_id, _, bid = value.rpartition(":")
        try:
            if not ad_id:
                raise ValueError(value)
            ads.append(AdBid(ad_id, float(bid)))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not AD_ID:BID") from None
    return ads


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options every subcommand shares: where the server is and how to reach it."""
    decorators = [
        click.option(
            "--target",
            default=DEFAULT_TARGET,
            show_default=True,
            envvar="REACHRANK_TARGET",
            help="HOST:PORT, or several comma-separated (round-robin).",
        ),
        click.option(
            "--timeout", type=float, default=2.0, show_default=True, help="Deadline in seconds."
        ),
        click.option("--token", envvar="REACHRANK_TOKEN", help="Bearer token."),
        click.option(
            "--tls-root",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="PEM CA bundle: connect with TLS.",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def json_flag(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        command
    )


def connection_settings(timeout: float, token: str | None, tls_root: Path | None) -> dict[str, Any]:
    """ClientOptions overrides from the shared connection options."""
    return {
        "timeout": timeout,
        "token": token,
        "root_certificates": tls_root.read_bytes() if tls_root else None,
    }


def _connect(
    target: str, timeout: float, token: str | None, tls_root: Path | None
) -> ReachRankClient:
    return ReachRankClient(target, **connection_settings(timeout, token, tls_root))


def _models_line(models: tuple[ModelInfo, ...]) -> str:
    return ", ".join(
        f"{m.name} v{m.version} ({m.kind}{', ' + m.provider if m.provider else ''})" for m in models
    )


def _emit_json(result: Any) -> None:
    def default(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"cannot encode {type(value).__name__}")

    payload = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
    click.echo(json.dumps(payload, indent=2, default=default))


class _RpcErrorsAsClickErrors(click.Group):
    """Print `ReachRankError` as a one-line error with exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReachRankError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_RpcErrorsAsClickErrors)
def client() -> None:
    """Call a running ReachRank server."""


@client.command()
@click.option("--user", "user_id", required=True, help="User id.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of items.")
@click.option("--context", multiple=True, callback=_key_values, help="KEY=VALUE request context.")
@click.option("--category", "categories", multiple=True, help="Keep only these categories.")
@click.option("--min-price", type=float)
@click.option("--max-price", type=float)
@click.option("--exclude", multiple=True, help="Item id never to return.")
@connection_options
@json_flag
def recommend(
    user_id: str,
    k: int,
    context: dict[str, str],
    categories: tuple[str, ...],
    min_price: float | None,
    max_price: float | None,
    exclude: tuple[str, ...],
    target: str,
    timeout: float,
    token: str | None,
    tls_root: Path | None,
    as_json: bool,
) -> None:
    """Recommend K items to a user."""
    with _connect(target, timeout, token, tls_root) as sdk:
        result = sdk.recommend(
            user_id,
            k,
            context=context,
            categories=categories,
            min_price=min_price,
            max_price=max_price,
            exclude=exclude,
        )
    if as_json:
        _emit_json(result)
        return
    rows = [
        (rank, item.item_id, item.score, item.retrieval_score, item.category, item.price)
        for rank, item in enumerate(result.items, start=1)
    ]
    click.echo(format_table(["rank", "item", "score", "retrieval", "category", "price"], rows))
    click.echo(f"strategy: {result.strategy}; models: {_models_line(result.models)}")


@client.command("rank-ads")
@click.option("--user", "user_id", required=True, help="User id.")
@click.option(
    "--ad", "ads", multiple=True, required=True, callback=_ads, help="AD_ID:BID (repeat)."
)
@click.option("--slots", type=int, default=1, show_default=True)
@click.option(
    "--reserve", type=float, default=0.0, show_default=True, help="Reserve price per click."
)
@click.option("--context", multiple=True, callback=_key_values, help="KEY=VALUE request context.")
@connection_options
@json_flag
def rank_ads(
    user_id: str,
    ads: list[AdBid],
    slots: int,
    reserve: float,
    context: dict[str, str],
    target: str,
    timeout: float,
    token: str | None,
    tls_root: Path | None,
    as_json: bool,
) -> None:
    """Run an ad auction for a user."""
    with _connect(target, timeout, token, tls_root) as sdk:
        result = sdk.rank_ads(user_id, ads, slots=slots, reserve_price=reserve, context=context)
    if as_json:
        _emit_json(
            dataclasses.asdict(result)
            | {"winners": [dataclasses.asdict(w) for w in result.winners]}
        )
        return
    rows = [
        (ad.slot or "-", ad.ad_id, ad.pctr, ad.bid, ad.expected_value, ad.price)
        for ad in result.ads
    ]
    click.echo(format_table(["slot", "ad", "pctr", "bid", "expected_value", "price"], rows))
    click.echo(f"below reserve: {result.below_reserve}; models: {_models_line(result.models)}")


@client.command()
@click.option("--model", required=True, help="Model name in the repository.")
@click.option(
    "--version", "model_version", type=int, default=0, show_default=True, help="0: serving version."
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    callback=_key_values,
    help="NAME=FILE.npy input tensor (repeat).",
)
@connection_options
@json_flag
def score(
    model: str,
    model_version: int,
    inputs: dict[str, str],
    target: str,
    timeout: float,
    token: str | None,
    tls_root: Path | None,
    as_json: bool,
) -> None:
    """Score a model on input arrays stored as .npy files."""
    arrays = {name: np.load(path, allow_pickle=False) for name, path in inputs.items()}
    with _connect(target, timeout, token, tls_root) as sdk:
        result = sdk.score(model, arrays, model_version)
    if as_json:
        _emit_json(result)
        return
    rows = [
        (name, str(a.dtype), "x".join(map(str, a.shape)), str(a.ravel()[:5].tolist()))
        for name, a in result.outputs.items()
    ]
    click.echo(format_table(["output", "dtype", "shape", "first values"], rows))
    click.echo(f"model: {_models_line((result.model,))}")


@client.command()
@click.option("--service", default="", help="Service name ('' = the whole server).")
@connection_options
@json_flag
def health(
    service: str,
    target: str,
    timeout: float,
    token: str | None,
    tls_root: Path | None,
    as_json: bool,
) -> None:
    """Print the server's health status; exit status 1 unless SERVING."""
    with _connect(target, timeout, token, tls_root) as sdk:
        status = sdk.health(service)
    click.echo(json.dumps({"status": status}) if as_json else status)
    if status != "SERVING":
        raise SystemExit(1)
