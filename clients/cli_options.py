"""Click options shared by `reachrank client` and `reachrank loadtest`: where the server is,
how to reach it, and the small parsers for KEY=VALUE and AD_ID:BID arguments."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from clients.client import ReachRankClient
from clients.options import ClientOptions
from clients.types import AdBid

DEFAULT_TARGET = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class Connection:
    """A target and the client options the command line asked for."""

    target: str
    options: ClientOptions

    def client(self) -> ReachRankClient:
        return ReachRankClient(self.target, self.options)


_CONNECTION_OPTIONS = [
    click.option(
        "--target",
        default=DEFAULT_TARGET,
        show_default=True,
        envvar="REACHRANK_TARGET",
        help="HOST:PORT, or several comma-separated (round-robin) [REACHRANK_TARGET].",
    ),
    click.option(
        "--timeout", type=float, default=2.0, show_default=True, help="Deadline in seconds."
    ),
    click.option("--token", envvar="REACHRANK_TOKEN", help="Bearer token [REACHRANK_TOKEN]."),
    click.option(
        "--tls-root",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="PEM CA bundle: connect with TLS.",
    ),
]


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --target/--timeout/--token/--tls-root; the command receives `connection`."""

    @functools.wraps(command)
    def with_connection(
        *args: Any,
        target: str,
        timeout: float,
        token: str | None,
        tls_root: Path | None,
        **kwargs: Any,
    ) -> Any:
        options = ClientOptions(
            timeout=timeout,
            token=token,
            root_certificates=tls_root.read_bytes() if tls_root else None,
        )
        return command(*args, connection=Connection(target, options), **kwargs)

    for decorator in reversed(_CONNECTION_OPTIONS):
        with_connection = decorator(with_connection)
    return with_connection


def key_values(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """Click callback: repeated KEY=VALUE arguments as a dict."""
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE")
        pairs[key] = text
    return pairs


def ad_bids(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[AdBid]:
    """Click callback: repeated AD_ID:BID arguments (the id may itself hold colons)."""
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
