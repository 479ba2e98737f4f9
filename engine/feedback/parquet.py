"""Convert logged ``FeedbackEvent`` payloads into a Parquet file in the trainer's event schema.

Columns: ``user_id, item_id, ts, event, value, price, position, request_id`` (the event schema
of ``training.schema``), then ``experiment, variant, model, model_version`` and one String
column per context key. Protobuf cannot tell "unset" from zero, so the zero values the
contract calls unknown (position 0, model_version 0, empty strings) are written as nulls, and
so are a price or value of 0: a null price lets the trainer fall back to the catalogue's.
A context key that would shadow one of these columns is written as ``context_<key>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from reachrank.v1 import feedback_pb2

from engine.feedback.files import publish

TEXT_COLUMNS = ("user_id", "item_id", "event", "request_id", "experiment", "variant", "model")
FIXED_COLUMNS = (
    "user_id",
    "item_id",
    "ts",
    "event",
    "value",
    "price",
    "position",
    "request_id",
    "experiment",
    "variant",
    "model",
    "model_version",
)


def context_column(key: str) -> str:
    """The column a context key is written to."""
    return f"context_{key}" if key in FIXED_COLUMNS else key


def decode(payloads: Sequence[bytes]) -> list[feedback_pb2.FeedbackEvent]:
    return [feedback_pb2.FeedbackEvent.FromString(p) for p in payloads]


def events_frame(events: Sequence[feedback_pb2.FeedbackEvent]) -> pl.DataFrame:
    """The events as a table in the trainer's event schema plus serving context."""
    columns: dict[str, pl.Series] = {
        name: pl.Series(name, [getattr(e, name) for e in events], pl.String)
        for name in TEXT_COLUMNS
    }
    columns["ts"] = pl.Series("ts", [e.ts_unix_ms for e in events], pl.Int64)
    columns["value"] = pl.Series("value", [e.value for e in events], pl.Float64)
    columns["price"] = pl.Series("price", [e.price for e in events], pl.Float64)
    columns["position"] = pl.Series("position", [e.position for e in events], pl.Int32)
    columns["model_version"] = pl.Series(
        "model_version", [e.model_version for e in events], pl.Int64
    )
    keys = sorted({k for e in events for k in e.context})
    context = {
        context_column(k): pl.Series(
            context_column(k), [e.context.get(k) for e in events], pl.String
        )
        for k in keys
    }
    frame = pl.DataFrame({**columns, **context})
    zero_is_null = [
        pl.when(pl.col(c) != 0).then(pl.col(c)).alias(c)
        for c in ("value", "price", "position", "model_version")
    ]
    blank_is_null = [pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in TEXT_COLUMNS]
    return frame.with_columns(
        *zero_is_null,
        *blank_is_null,
        pl.from_epoch("ts", time_unit="ms").dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
    ).select(*FIXED_COLUMNS, *context)


def write_events_parquet(payloads: Sequence[bytes], path: Path) -> int:
    """Write the events durably and atomically to ``path``; returns the number of rows."""
    frame = events_frame(decode(payloads))
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    publish(tmp, path)
    return frame.height
