"""The one event-log schema every reader maps onto, and its validation.

An event log is a table with these columns (extra columns are context, e.g. ``device``,
and are carried through as strings):

=============  ======================  ==================================================
column         dtype                   meaning
=============  ======================  ==================================================
user_id        String                  who
item_id        String                  what (item, product, course or ad)
ts             Datetime(us, UTC)       when
event          String                  impression | click | purchase | rating
value          Float64 (nullable)      rating value, or revenue of a purchase
price          Float64 (nullable)      the item's unit price at event time
position       Int32 (nullable)        1-based slot the item was shown in
request_id     String (nullable)       groups the impressions of one page view with their clicks
=============  ======================  ==================================================

Optional side tables: ``items`` (item_id, category, price, ...) and ``users`` (user_id, ...).
"""

from __future__ import annotations

import polars as pl

from training.errors import InputError

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "purchase", "rating")

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "event": pl.String(),
    "value": pl.Float64(),
    "price": pl.Float64(),
    "position": pl.Int32(),
    "request_id": pl.String(),
}
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ts", "event")


class SchemaError(InputError):
    """An input does not match the event-log schema; the message names the column."""


def conform_events(lf: pl.LazyFrame, source: str = "events") -> pl.LazyFrame:
    """Check required columns, add missing optional ones as nulls, cast to the schema.

    Context columns (anything not in the schema) are kept and cast to String.
    """
    names = lf.collect_schema().names()
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise SchemaError(
            f"{source}: missing required column(s) {missing}; expected at least "
            f"{list(REQUIRED_COLUMNS)}, found {names}"
        )
    exprs: list[pl.Expr] = []
    for name, dtype in EVENT_SCHEMA.items():
        if name in names:
            exprs.append(pl.col(name).cast(dtype, strict=False).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    context = [pl.col(c).cast(pl.String) for c in names if c not in EVENT_SCHEMA]
    return lf.select(*exprs, *context)


def context_columns(lf: pl.LazyFrame) -> list[str]:
    """The context columns of a conformed event log."""
    return [c for c in lf.collect_schema().names() if c not in EVENT_SCHEMA]
