"""Read an event log in any supported input format as a conformed, validated LazyFrame.

``read_events(path, format)`` is the one entry point the trainer calls. Formats:

- ``events``: a table already in the event schema (:mod:`training.schema`): a Parquet, CSV or
  NDJSON file, or a directory of Parquet files.
- ``simulator``: the simulator's output directory (``events.parquet`` plus the ``items.parquet``
  and ``users.parquet`` side tables).
- ``movielens``, ``online-retail``: see :mod:`training.read_movielens`,
  :mod:`training.read_online_retail`.
- ``criteo``, ``talkingdata``: ad logs, see :mod:`training.read_ads`.

Bad rows are never dropped silently: :class:`~training.read_common.ReadResult` counts them per
reason, and a file that is not of the format asked for fails with ``SchemaError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from training.forgotten import exclude_forgotten
from training.pseudonyms import pseudonymise
from training.read_ads import read_criteo, read_talkingdata
from training.read_common import (
    ROW,
    Field,
    ReadResult,
    Rule,
    blank_to_null,
    parse_ts,
    parsed,
    probe,
    require_columns,
    triage,
)
from training.read_movielens import read_movielens
from training.read_online_retail import read_online_retail
from training.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS, SchemaError

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_TEXT_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}


def read_events(
    path: str | Path,
    format: str = "events",
    forgotten: Path | None = None,
    pseudonym_key: Path | None = None,
    **options: str | None,
) -> ReadResult:
    """Read ``path`` in ``format`` (one of :data:`FORMATS`); ``options`` go to that reader.
    ``forgotten``: the tombstone set of erased users (see :func:`filter_events`);
    ``pseudonym_key``: a secret file, to key users by HMAC pseudonyms (training.pseudonyms)."""
    try:
        reader = FORMATS[format]
    except KeyError:
        raise ValueError(f"unknown format {format!r}; expected one of {sorted(FORMATS)}") from None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    result = reader(path, **options)
    events = pseudonymise(filter_events(result.events, forgotten), pseudonym_key)
    users = result.users
    if users is not None:
        users = pseudonymise(exclude_forgotten(users, forgotten), pseudonym_key)
    return replace(result, events=events, users=users)


def filter_events(events: pl.LazyFrame, forgotten: Path | None = None) -> pl.LazyFrame:
    """Rows every read leaves out of the conformed log before training sees it: a function of
    the LazyFrame, so both the in-memory and the streaming trainer apply it. Today: the users
    erased by ForgetUser (``forgotten``, else ``$REACHRANK_FORGOTTEN_FILE``;
    :mod:`training.forgotten`)."""
    return exclude_forgotten(events, forgotten)


def read_event_table(path: Path) -> ReadResult:
    """A Parquet/CSV/NDJSON file, or a directory of Parquet files, in the event schema."""
    source = str(path)
    lf = _scan_table(path)
    names = lf.collect_schema().names()
    require_columns(names, REQUIRED_COLUMNS, source)
    schema = lf.collect_schema()
    fields = _event_fields(schema)
    context = [c for c in names if c not in EVENT_SCHEMA]
    unknown_event = Rule(
        "unknown_event",
        parsed("event").is_not_null() & ~parsed("event").is_in(list(EVENT_TYPES)),
    )
    # Numbers are read as Unix seconds; milliseconds would land tens of millennia ahead.
    implausible_ts = Rule(
        "implausible_ts",
        (parsed("ts") < _EARLIEST) | (parsed("ts") >= _LATEST),
        structural=True,
        message="column 'ts' lies outside 1970-2100 (numbers must be Unix seconds)",
    )
    rules = [unknown_event, implausible_ts]
    frame = lf.with_row_index(ROW, offset=1)
    probe(frame, fields, rules, source)
    events, counts, _ = triage(frame, fields, rules, context, source)
    return ReadResult(events, None, None, source, "events", counts)


def read_simulator(path: Path) -> ReadResult:
    """The simulator's output directory: events plus item and user side tables."""
    if not path.is_dir():
        raise SchemaError(f"{path}: the simulator format is a directory with events.parquet")
    events_path = path / "events.parquet"
    if not events_path.exists():
        raise SchemaError(f"{path}: no events.parquet in the simulator directory")
    result = read_event_table(events_path)
    items = _side_table(path / "items.parquet", "item_id")
    users = _side_table(path / "users.parquet", "user_id")
    return ReadResult(result.events, items, users, str(path), "simulator", result.counts)


def _scan_table(path: Path) -> pl.LazyFrame:
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise SchemaError(f"{path}: a directory of events must hold Parquet files")
        # Files may carry different context columns (the feedback log writes one per context
        # key seen): read the union, a column absent from a file is null there.
        schema: dict[str, pl.DataType] = {}
        for file in files:
            for name, dtype in pl.read_parquet_schema(file).items():
                schema.setdefault(name, dtype)
        return pl.scan_parquet(files, schema=schema, missing_columns="insert")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.scan_parquet(path)
    kind = _TEXT_SUFFIXES.get(suffix)
    if kind == "ndjson":
        # Infer over the whole file: a type change after the first rows must not abort the read.
        return pl.scan_ndjson(path, infer_schema_length=None)
    if kind in ("csv", "tsv"):
        # All text, parsed per column below, so a bad value is a counted row, not a crash.
        return pl.scan_csv(path, separator="\t" if kind == "tsv" else ",", infer_schema=False)
    raise SchemaError(
        f"{path}: unknown event file type {suffix!r}; use .parquet, .csv, .tsv or .ndjson"
    )


def _event_fields(schema: pl.Schema) -> list[Field]:
    def text(name: str) -> pl.Expr:
        return blank_to_null(pl.col(name))

    def number(name: str, dtype: pl.DataType) -> Field:
        # Native numbers skip the text round trip, which costs on 10M-row Parquet logs.
        raw = pl.col(name) if schema[name].is_numeric() else text(name)
        return Field(
            name,
            raw.cast(pl.Float64, strict=False).cast(dtype, strict=False),
            raw,
            False,
            name,
            "a number",
        )

    ts_type = schema["ts"]
    # Only text needs the empty-means-missing rule; casting native times to text costs ~1 s per 10M.
    ts_raw = text("ts") if ts_type == pl.String else pl.col("ts")
    fields = [
        Field("user_id", text("user_id"), text("user_id"), True, "user_id"),
        Field("item_id", text("item_id"), text("item_id"), True, "item_id"),
        Field("ts", parse_ts(pl.col("ts"), ts_type), ts_raw, True, "ts", "a timestamp"),
        Field("event", text("event").str.to_lowercase(), text("event"), True, "event"),
    ]
    for name, dtype in (("value", pl.Float64()), ("price", pl.Float64()), ("position", pl.Int32())):
        if name in schema:
            fields.append(number(name, dtype))
    if "request_id" in schema:
        fields.append(Field("request_id", text("request_id")))
    return fields


def _side_table(path: Path, key: str) -> pl.LazyFrame | None:
    """A side table keyed by ``key`` (cast to String, as in the event log); None when absent."""
    if not path.exists():
        return None
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    require_columns(schema.names(), [key], str(path))
    casts = [pl.col(key).cast(pl.String)]
    if "category" in schema:
        casts.append(pl.col("category").cast(pl.String))
    if "price" in schema:
        casts.append(pl.col("price").cast(pl.Float64))
    return lf.with_columns(casts)


FORMATS: dict[str, Callable[..., ReadResult]] = {
    "events": read_event_table,
    "simulator": read_simulator,
    "movielens": read_movielens,
    "online-retail": read_online_retail,
    "criteo": read_criteo,
    "talkingdata": read_talkingdata,
}
