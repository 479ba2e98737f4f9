"""Labelled ad logs (Criteo, TalkingData) as impression + click events.

Each input row is one impression with its own ``request_id`` (the row number, 0-based); a
positive label adds a ``click`` event with the same user, item, time and ``request_id``, so a
CTR trainer labels an impression by whether its request has a click. Both events share one
timestamp so that no temporal split can separate an impression from its label.

- Criteo (Kaggle display-ads TSV, no header): ``label, I1..I13, C1..C26``. The log carries no
  user, item or time: ``ts`` is a synthetic clock (row n at n seconds after the Unix epoch,
  keeping the file's chronological order for temporal splits), and ``user_id`` / ``item_id``
  are the request id unless ``user_column`` / ``item_column`` name a feature column to use.
  I1..I13 and C1..C26 stay as context columns (text, as all context; empty means missing).
- TalkingData (CSV with header ``ip,app,device,os,channel,click_time,attributed_time,
  is_attributed``): ``user_id`` = ip, ``item_id`` = app, ``ts`` = click_time, context device,
  os, channel; ``is_attributed`` = 1 (the app was downloaded) plays the click's role.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from training.read_common import (
    ROW,
    Field,
    ReadResult,
    Rule,
    blank_to_null,
    epoch_seconds,
    field_count_rule,
    parse_ts,
    probe,
    require_columns,
    scan_split_lines,
    triage,
)
from training.schema import SchemaError

CRITEO_INT_COLUMNS: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT_COLUMNS: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
TALKINGDATA_COLUMNS: tuple[str, ...] = (
    "ip", "app", "device", "os", "channel", "click_time", "attributed_time", "is_attributed",
)  # fmt: skip
_LABEL = "_label"
_INTEGER = r"^-?\d+$"


def read_criteo(
    path: Path, user_column: str | None = None, item_column: str | None = None
) -> ReadResult:
    """A Criteo-style TSV: ``label``, 13 integer and 26 categorical columns, no header."""
    if path.is_dir():
        raise SchemaError(f"{path}: the criteo format is one TSV file, not a directory")
    features = (*CRITEO_INT_COLUMNS, *CRITEO_CAT_COLUMNS)
    for name in (user_column, item_column):
        if name is not None and name not in features:
            raise ValueError(f"{name!r} is not a Criteo column; choose from {list(features)}")
    source = str(path)
    frame = scan_split_lines(path, "\t", ["label", *features])
    request = (pl.col(ROW) - 1).cast(pl.String)
    ints_ok = pl.all_horizontal(
        [pl.col(c).is_null() | pl.col(c).str.contains(_INTEGER) for c in CRITEO_INT_COLUMNS]
    )
    fields = [
        _id_field("user_id", user_column) if user_column else Field("user_id", request),
        _id_field("item_id", item_column) if item_column else Field("item_id", request),
        Field("ts", epoch_seconds(pl.col(ROW) - 1)),
        Field("event", pl.lit("impression")),
        Field("request_id", request),
    ]
    rules = [
        field_count_rule(1 + len(features), "\t"),
        _label_rule("label"),
        Rule("unparsable_int_feature", ~ints_ok, structural=True,
             message="columns I1..I13 must be integers or empty"),
    ]  # fmt: skip
    probe(frame, fields, rules, source)
    triaged = triage(frame.with_columns(pl.col("label").alias(_LABEL)), fields, rules,
                     [*features, _LABEL], source)  # fmt: skip
    return ReadResult(_with_clicks(triaged.events), None, None, source, "criteo", triaged.counts)


def read_talkingdata(path: Path) -> ReadResult:
    """The TalkingData ad-tracking CSV (the Kaggle ``train.csv`` or its sample)."""
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if not found:
            raise SchemaError(f"{path}: no TalkingData .csv file in it")
        path = found[0]
    source = str(path)
    lf = pl.scan_csv(path, infer_schema=False)
    require_columns(lf.collect_schema().names(), TALKINGDATA_COLUMNS, source)
    frame = lf.with_row_index(ROW, offset=1).with_columns(
        blank_to_null(pl.col("is_attributed")).alias(_LABEL)
    )
    fields = [
        _id_field("user_id", "ip"),
        _id_field("item_id", "app"),
        Field("ts", parse_ts(pl.col("click_time"), pl.String()), blank_to_null(pl.col("click_time")),
              True, "click_time", "a date and time"),
        Field("event", pl.lit("impression")),
        Field("request_id", (pl.col(ROW) - 1).cast(pl.String)),
    ]  # fmt: skip
    rules = [_label_rule(_LABEL, "is_attributed")]
    probe(frame, fields, rules, source)
    context = ["device", "os", "channel", _LABEL]
    triaged = triage(frame, fields, rules, context, source)
    return ReadResult(
        _with_clicks(triaged.events), None, None, source, "talkingdata", triaged.counts
    )


def _id_field(name: str, column: str) -> Field:
    raw = blank_to_null(pl.col(column))
    return Field(name, raw, raw, True, column)


def _label_rule(column: str, shown: str = "") -> Rule:
    return Rule(
        "bad_label",
        ~blank_to_null(pl.col(column)).is_in(["0", "1"]).fill_null(False),
        structural=True,
        message=f"column {shown or column!r} must be 0 or 1",
    )


def _with_clicks(impressions: pl.LazyFrame) -> pl.LazyFrame:
    """Add a click event, sharing the impression's request, for every positive label."""
    clicks = impressions.filter(pl.col(_LABEL) == "1").with_columns(pl.lit("click").alias("event"))
    return pl.concat([impressions, clicks]).drop(_LABEL)
