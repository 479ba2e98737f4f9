"""`reachrank client ...`: call a running server from the shell and print a table or JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from clients.cli_options import Connection, ad_bids, connection_options, key_values
from clients.errors import ReachRankError
from clients.table import format_table
from clients.types import AdBid, ModelInfo, ModelStatus, RecommendedItem


def _models_line(models: tuple[ModelInfo, ...]) -> str:
    return ", ".join(
        f"{m.name} v{m.version} ({m.kind}{', ' + m.provider if m.provider else ''})" for m in models
    )


def _json(payload: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"cannot encode {type(value).__name__}")

    if dataclasses.is_dataclass(payload) and not isinstance(payload, type):
        payload = dataclasses.asdict(payload)
    return json.dumps(payload, indent=2, default=default)


def _show(as_json: bool, payload: Any, render: Callable[[], str]) -> None:
    click.echo(_json(payload) if as_json else render())


def _items_table(items: tuple[RecommendedItem, ...]) -> str:
    rows = [
        (rank, item.item_id, item.score, item.retrieval_score, item.category, item.price)
        for rank, item in enumerate(items, start=1)
    ]
    return format_table(["rank", "item", "score", "retrieval", "category", "price"], rows)


json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
category_filters = [
    click.option("--category", "categories", multiple=True, help="Keep only these categories."),
    click.option("--min-price", type=float, help="Inclusive lower price bound."),
    click.option("--max-price", type=float, help="Inclusive upper price bound."),
]


def _with_category_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(category_filters):
        command = decorator(command)
    return command


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


consent_option = click.option(
    "--consent",
    type=click.Choice(["personalised", "context_only"]),
    default=None,
    help="The user's consent (default: the server's): context_only answers from context and "
    "popularity only.",
)


@client.command()
@click.option("--user", "user_id", required=True, help="User id.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of items.")
@click.option("--context", multiple=True, callback=key_values, help="KEY=VALUE request context.")
@_with_category_filters
@click.option("--exclude", multiple=True, help="Item id never to return.")
@click.option(
    "--max-per-category", type=int, default=0, show_default=True, help="Cap per category (0: none)."
)
@click.option(
    "--mmr", "mmr_lambda", type=float, default=0.0, show_default=True,
    help="Diversity: maximal-marginal-relevance lambda in (0, 1] (0: off).",
)  # fmt: skip
@consent_option
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
    max_per_category: int,
    mmr_lambda: float,
    consent: str | None,
    connection: Connection,
    as_json: bool,
) -> None:
    """Recommend K items to a user."""
    with connection.client() as sdk:
        result = sdk.recommend(
            user_id,
            k,
            context=context,
            categories=categories,
            min_price=min_price,
            max_price=max_price,
            exclude=exclude,
            max_per_category=max_per_category,
            mmr_lambda=mmr_lambda,
            consent=consent,
        )
    _show(
        as_json,
        result,
        lambda: (
            _items_table(result.items)
            + f"\nstrategy: {result.strategy} ({result.consent_mode}); "
            + f"models: {_models_line(result.models)}"
            + (f"; experiment: {result.experiment}/{result.variant}" if result.experiment else "")
        ),
    )


@client.command()
@click.option("--item", "item_id", required=True, help="Item id.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Number of items.")
@_with_category_filters
@connection_options
@json_flag
def similar(
    item_id: str,
    k: int,
    categories: tuple[str, ...],
    min_price: float | None,
    max_price: float | None,
    connection: Connection,
    as_json: bool,
) -> None:
    """The K items most like an item."""
    with connection.client() as sdk:
        result = sdk.similar_items(
            item_id, k, categories=categories, min_price=min_price, max_price=max_price
        )
    _show(
        as_json,
        result,
        lambda: _items_table(result.items) + f"\nmodels: {_models_line(result.models)}",
    )


@client.command()
@click.option("--item", "item_ids", multiple=True, required=True, help="Offer item id (repeat).")
@click.option("-n", "n", type=int, default=20, show_default=True, help="Number of users.")
@click.option("--segment", "segments", multiple=True, help="RFM segment or cluster:N (repeat).")
@click.option("--include-consumers", is_flag=True, help="Keep users who already bought/clicked.")
@connection_options
@json_flag
def audience(
    item_ids: tuple[str, ...],
    n: int,
    segments: tuple[str, ...],
    include_consumers: bool,
    connection: Connection,
    as_json: bool,
) -> None:
    """The N users likeliest to respond to an offer."""
    with connection.client() as sdk:
        result = sdk.audience(item_ids, n, segments=segments, include_consumers=include_consumers)

    def render() -> str:
        rows = [
            (rank, member.user_id, member.score, member.rfm_segment, member.cluster)
            for rank, member in enumerate(result.users, start=1)
        ]
        table = format_table(["rank", "user", "score", "rfm_segment", "cluster"], rows)
        return (
            f"{table}\neligible users: {result.eligible_users:,}; "
            f"models: {_models_line(result.models)}"
        )

    _show(as_json, result, render)


@client.command()
@click.option("--campaign-id", required=True, help="Campaign id (seeds the control group).")
@click.option("--fraction", type=float, help="Share of the profiled users to plan for.")
@click.option("--budget", type=float, help="Total cost of the contacts (needs --cost).")
@click.option("--cost", "costs", multiple=True, callback=key_values, help="TREATMENT=COST.")
@click.option("--value-per-conversion", type=float, default=0.0, help="[the model's]")
@click.option("--control-fraction", type=float, default=None, help="Held-out share [0.1].")
@click.option("--max-contacts", type=int, default=0, help="Cap per user per --window-hours.")
@click.option("--window-hours", type=float, default=0.0)
@click.option("--quiet-hours", type=float, default=0.0, help="No contact this long after a buy.")
@click.option("--segment", "segments", multiple=True, help="RFM segment or cluster:N (repeat).")
@click.option("--user", "user_ids", multiple=True, help="Candidate user (repeat) [every profiled].")
@click.option("--model", default="", help="Uplift model [uplift].")
@click.option("--top", type=int, default=20, show_default=True, help="Rows to print.")
@consent_option
@connection_options
@json_flag
def campaign(
    campaign_id: str,
    fraction: float | None,
    budget: float | None,
    costs: dict[str, str],
    value_per_conversion: float,
    control_fraction: float | None,
    max_contacts: int,
    window_hours: float,
    quiet_hours: float,
    segments: tuple[str, ...],
    user_ids: tuple[str, ...],
    model: str,
    top: int,
    consent: str | None,
    connection: Connection,
    as_json: bool,
) -> None:
    """Whom to contact with which treatment (by uplift), and the held-out control group."""
    try:
        cost_of = {k: float(v) for k, v in costs.items()}
    except ValueError:
        raise click.BadParameter(
            f"costs must be numbers, got {costs}", param_hint="--cost"
        ) from None
    with connection.client() as sdk:
        result = sdk.plan_campaign(
            campaign_id,
            fraction=fraction,
            budget=budget,
            costs=cost_of,
            value_per_conversion=value_per_conversion,
            control_fraction=control_fraction,
            max_contacts=max_contacts,
            window_hours=window_hours,
            quiet_hours_after_purchase=quiet_hours,
            segments=segments,
            user_ids=user_ids,
            model=model,
            consent=consent,
        )

    def render() -> str:
        rows = list(
            zip(
                result.user_ids[:top],
                result.treatments[:top],
                result.expected_uplift[:top],
                result.expected_value[:top],
                strict=True,
            )
        )
        table = format_table(["user", "treatment", "expected_uplift", "expected_value"], rows)
        summary = ", ".join(f"{k} {v}" for k, v in result.summary.items())
        return (
            f"{table}\ncontrol group: {len(result.control_user_ids)} users; {summary} "
            f"({result.consent_mode})"
        )

    _show(as_json, result, render)


@client.command()
@click.option("--user", "user_id", required=True, help="User id.")
@connection_options
@json_flag
def profile(user_id: str, connection: Connection, as_json: bool) -> None:
    """A user's profile features and segments."""
    with connection.client() as sdk:
        result = sdk.profile(user_id)

    def render() -> str:
        if not result.known:
            return f"{user_id}: unknown user (no profile)"
        rows = [
            ("rfm_segment", result.rfm_segment),
            ("cluster", str(result.cluster)),
            *sorted(result.attributes.items()),
            *((name, f"{value:g}") for name, value in sorted(result.features.items())),
        ]
        return format_table(["field", "value"], rows)

    _show(as_json, result, render)


@client.command("rank-ads")
@click.option("--user", "user_id", required=True, help="User id.")
@click.option(
    "--ad", "ads", multiple=True, required=True, callback=ad_bids, help="AD_ID:BID (repeat)."
)
@click.option("--slots", type=int, default=1, show_default=True)
@click.option(
    "--reserve", type=float, default=0.0, show_default=True, help="Reserve price per click."
)
@click.option("--context", multiple=True, callback=key_values, help="KEY=VALUE request context.")
@consent_option
@connection_options
@json_flag
def rank_ads(
    user_id: str,
    ads: list[AdBid],
    slots: int,
    reserve: float,
    context: dict[str, str],
    consent: str | None,
    connection: Connection,
    as_json: bool,
) -> None:
    """Run an ad auction for a user."""
    with connection.client() as sdk:
        # Every eligible ad: the table shows the losers too (slot "-").
        result = sdk.rank_ads(
            user_id,
            ads,
            slots=slots,
            reserve_price=reserve,
            context=context,
            all_ranked=True,
            consent=consent,
        )

    def render() -> str:
        rows = [
            (ad.slot or "-", ad.ad_id, ad.pctr, ad.bid, ad.expected_value, ad.price)
            for ad in result.ads
        ]
        table = format_table(["slot", "ad", "pctr", "bid", "expected_value", "price"], rows)
        return (
            f"{table}\nbelow reserve: {result.below_reserve}; models: {_models_line(result.models)}"
        )

    payload = dataclasses.asdict(result) | {
        "winners": [dataclasses.asdict(w) for w in result.winners]
    }
    _show(as_json, payload, render)


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
    callback=key_values,
    help="NAME=FILE.npy input tensor (repeat).",
)
@connection_options
@json_flag
def score(
    model: str, model_version: int, inputs: dict[str, str], connection: Connection, as_json: bool
) -> None:
    """Score a model on input arrays stored as .npy files."""
    arrays = {name: np.load(path, allow_pickle=False) for name, path in inputs.items()}
    with connection.client() as sdk:
        result = sdk.score(model, arrays, model_version)

    def render() -> str:
        rows = [
            (
                name,
                str(a.dtype),
                "x".join(map(str, a.shape)),
                np.array2string(a.ravel()[:5], precision=4, separator=", "),
            )
            for name, a in result.outputs.items()
        ]
        table = format_table(["output", "dtype", "shape", "first values"], rows)
        return f"{table}\nmodel: {_models_line((result.model,))}"

    _show(as_json, result, render)


def _models_table(statuses: list[ModelStatus]) -> str:
    rows = [
        (
            m.name,
            m.kind,
            m.version or "-",
            m.state,
            m.policy,
            ",".join(map(str, m.available_versions)) or "-",
            ",".join(map(str, m.loaded_versions)) or "-",
            m.provider or "-",
            m.last_error,
        )
        for m in statuses
    ]
    headers = ["model", "kind", "serving", "state", "policy", "available", "loaded", "provider"]
    return format_table([*headers, "last_error"], rows)


@client.command()
@connection_options
@json_flag
def models(connection: Connection, as_json: bool) -> None:
    """The server's models, versions and states."""
    with connection.client() as sdk:
        statuses = sdk.models()
    _show(as_json, [dataclasses.asdict(m) for m in statuses], lambda: _models_table(statuses))


@client.command("load-model")
@click.argument("name")
@click.option(
    "--version", "model_version", type=int, default=0, help="Pin this version (0: policy)."
)
@connection_options
@json_flag
def load_model(name: str, model_version: int, connection: Connection, as_json: bool) -> None:
    """Load or reload a model (validated and warmed up before it takes traffic)."""
    with connection.client() as sdk:
        status = sdk.load_model(name, model_version)
    _show(as_json, status, lambda: _models_table([status]))
    if status.last_error:
        raise SystemExit(1)


@client.command("unload-model")
@click.argument("name")
@connection_options
@json_flag
def unload_model(name: str, connection: Connection, as_json: bool) -> None:
    """Stop serving a model and free its memory."""
    with connection.client() as sdk:
        status = sdk.unload_model(name)
    _show(as_json, status, lambda: _models_table([status]))


@client.command("forget-user")
@click.option("--user", "user_id", required=True, help="User id to erase.")
@connection_options
@json_flag
def forget_user(user_id: str, connection: Connection, as_json: bool) -> None:
    """Admin: erase a user everywhere the server keeps data; later training runs leave them
    out. Prints what was erased where (idempotent: zeros once done)."""
    with connection.client() as sdk:
        erased = sdk.forget_user(user_id)
    _show(
        as_json,
        erased,
        lambda: format_table(["place", "erased"], sorted(erased.items())),
    )


@client.command()
@click.option("--service", default="", help="Service name ('' = the whole server).")
@connection_options
@json_flag
def health(service: str, connection: Connection, as_json: bool) -> None:
    """Print the server's health status; exit status 1 unless SERVING."""
    with connection.client() as sdk:
        status = sdk.health(service)
    _show(as_json, {"status": status}, lambda: status)
    if status != "SERVING":
        raise SystemExit(1)
