"""The machinery every reader shares: tagging bad rows with a reason, probing a file's format.

A reader maps its raw input onto the event schema as a set of :class:`Field` parsers plus
format-specific :class:`Rule` checks. :func:`triage` tags each raw row with the first check it
fails (so every row is counted exactly once), keeps the good rows, and counts the rest per
reason; :func:`probe` reads the first rows eagerly so that a file of the wrong format fails at
once with a :class:`~training.schema.SchemaError` instead of being counted away row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import polars as pl

from training.schema import SchemaError, conform_events

REASON = "_reason"
ROW = "_row"
# Rows read eagerly to decide whether a file has the expected format at all.
PROBE_ROWS = 1000
# A column that fails to parse in more than this share of the probed rows means the file is of
# another format; below it, failures are data errors and are counted per row.
PROBE_FAILURE_SHARE = 0.5
_PARSED = "__parsed_"
_EPOCH_NUMBER = r"^\s*-?\d+(\.\d+)?\s*$"


def parsed(name: str) -> pl.Expr:
    """The already-parsed value of schema column ``name``, for use inside a :class:`Rule`."""
    return pl.col(_PARSED + name)


@dataclass(frozen=True)
class Field:
    """How one schema column is parsed from the raw input.

    A required field whose parse is null counts as ``missing_<name>`` when the raw value is
    null too, else as ``unparsable_<name>``; an optional field only counts as unparsable.
    """

    name: str
    parsed: pl.Expr
    # The raw value (null when absent); None for fields made up by the reader.
    raw: pl.Expr | None = None
    required: bool = False
    # Where the raw value comes from and what it should look like, for error messages.
    source_column: str = ""
    expects: str = ""

    def checks(self) -> list[tuple[str, pl.Expr]]:
        value = parsed(self.name)
        if self.raw is None:
            return [(f"missing_{self.name}", value.is_null())] if self.required else []
        unparsable = (f"unparsable_{self.name}", self.raw.is_not_null() & value.is_null())
        if self.required:
            return [(f"missing_{self.name}", self.raw.is_null()), unparsable]
        return [unparsable]


@dataclass(frozen=True)
class Rule:
    """A format-specific reason to drop a row (a cancellation, a malformed line, ...).

    A structural rule describes the file's layout: failing it in most probed rows means the
    file is not of the expected format.
    """

    reason: str
    bad: pl.Expr
    structural: bool = False
    message: str = ""


@dataclass(frozen=True)
class ReadReport:
    """How many input rows were read and kept, and how many were dropped for which reason."""

    source: str
    format: str
    rows_read: int
    rows_kept: int
    dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, counts: pl.DataFrame, source: str, fmt: str) -> ReadReport:
        kept = counts.filter(pl.col(REASON).is_null())["rows"].sum()
        bad = counts.filter(pl.col(REASON).is_not_null()).sort(
            ["rows", REASON], descending=[True, False]
        )
        dropped = dict(zip(bad[REASON].to_list(), bad["rows"].to_list(), strict=True))
        return cls(source, fmt, int(counts["rows"].sum()), int(kept), dropped)

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "format": self.format,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
        }

    def __str__(self) -> str:
        lines = [
            f"{self.source} ({self.format}): {self.rows_kept:,} of {self.rows_read:,} rows kept"
        ]
        lines += [f"  dropped {n:,}: {reason}" for reason, n in self.dropped.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class ReadResult:
    """A conformed event log (good rows only), optional side tables, and the bad-row counts.

    Everything is lazy: :meth:`collect` runs the events and the counts in one pass over the
    input; :meth:`report` runs only the counting query.
    """

    events: pl.LazyFrame
    items: pl.LazyFrame | None
    users: pl.LazyFrame | None
    source: str
    format: str
    # One row per reason (null reason: rows kept) with the number of input rows.
    counts: pl.LazyFrame

    def report(self) -> ReadReport:
        return ReadReport.from_counts(self.counts.collect(), self.source, self.format)

    def collect(self) -> tuple[pl.DataFrame, ReadReport]:
        events, counts = pl.collect_all([self.events, self.counts])
        return events, ReadReport.from_counts(counts, self.source, self.format)


class Triaged(NamedTuple):
    """The outcome of :func:`triage`."""

    # Good rows, conformed to the event schema.
    events: pl.LazyFrame
    # One row per reason (null: kept) with the number of input rows.
    counts: pl.LazyFrame
    # Good rows with their raw columns and the parsed ones (see :func:`parsed`), for side tables.
    kept: pl.LazyFrame


def triage(
    frame: pl.LazyFrame,
    fields: Sequence[Field],
    rules: Sequence[Rule] = (),
    context: Sequence[str] = (),
    source: str = "events",
) -> Triaged:
    """Tag rows with the first failed rule or field check; keep the good rows, count the rest.

    Rules come first: a cancelled invoice line without a customer counts as a cancellation.
    """
    checks = [(r.reason, r.bad) for r in rules] + [c for f in fields for c in f.checks()]
    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for name, bad in reversed(checks):
        reason = pl.when(bad.fill_null(False)).then(pl.lit(name)).otherwise(reason)
    tagged = frame.with_columns(*[f.parsed.alias(_PARSED + f.name) for f in fields]).with_columns(
        reason.alias(REASON)
    )
    kept = tagged.filter(pl.col(REASON).is_null())
    good = kept.select(
        *[parsed(f.name).alias(f.name) for f in fields], *[pl.col(c) for c in context]
    )
    counts = tagged.group_by(REASON).agg(pl.len().cast(pl.Int64).alias("rows"))
    return Triaged(conform_events(good, source), counts, kept)


def probe(frame: pl.LazyFrame, fields: Sequence[Field], rules: Sequence[Rule], source: str) -> None:
    """Fail with SchemaError when the first rows show the input is not of the expected format.

    ``frame`` must carry the 1-based row number in column ``ROW`` for the message.
    """
    head = frame.head(PROBE_ROWS).with_columns(*[f.parsed.alias(_PARSED + f.name) for f in fields])
    checks: list[tuple[pl.Expr, pl.Expr, str]] = [
        (pl.lit(True), r.bad.fill_null(False), r.message or r.reason) for r in rules if r.structural
    ]
    for f in fields:
        if f.raw is not None:
            what = f"column {f.source_column or f.name!r}" + (
                f" ({f.expects})" if f.expects else ""
            )
            checks.append(
                (f.raw.is_not_null(), f.raw.is_not_null() & parsed(f.name).is_null(), what)
            )
    if not checks:
        return
    sample = head.select(
        pl.col(ROW),
        *[p.alias(f"present_{i}") for i, (p, _, _) in enumerate(checks)],
        *[b.alias(f"bad_{i}") for i, (_, b, _) in enumerate(checks)],
        *[f.raw.cast(pl.String).alias(f"raw_{f.name}") for f in fields if f.raw is not None],
    ).collect()
    for i, (_, _, what) in enumerate(checks):
        present = int(sample[f"present_{i}"].sum())
        bad = sample.filter(pl.col(f"bad_{i}"))
        if bad.height and bad.height > PROBE_FAILURE_SHARE * present:
            row = bad[ROW][0]
            raise SchemaError(
                f"{source}: does not match the expected format: {what}; "
                f"{bad.height} of the first {sample.height} rows fail, first at row {row}"
                + _raw_values(bad, fields)
            )


def _raw_values(bad: pl.DataFrame, fields: Sequence[Field]) -> str:
    cols = [f"raw_{f.name}" for f in fields if f.raw is not None and f"raw_{f.name}" in bad.columns]
    if not cols:
        return ""
    first = bad.row(0, named=True)
    shown = ", ".join(f"{c.removeprefix('raw_')}={first[c]!r}" for c in cols)
    return f" ({shown})"


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Empty text means absent in delimited files (and in text columns generally)."""
    text = expr.cast(pl.String)
    return pl.when(text.str.len_bytes() > 0).then(text)


def parse_ts(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Any timestamp representation → Datetime(us, UTC).

    Numbers (and numeric strings) are Unix seconds; strings are ISO-8601-like (an offset is
    honoured, a naive time is taken as UTC); naive datetimes are taken as UTC.
    """
    if isinstance(dtype, pl.Datetime):
        as_us = expr.dt.cast_time_unit("us")
        if dtype.time_zone is None:
            return as_us.dt.replace_time_zone("UTC")
        return as_us.dt.convert_time_zone("UTC")
    if isinstance(dtype, pl.Date):
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype.is_numeric():
        return epoch_seconds(expr)
    text = blank_to_null(expr)
    return (
        pl.when(text.str.contains(_EPOCH_NUMBER))
        .then(epoch_seconds(text.cast(pl.Float64, strict=False)))
        .otherwise(text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False))
    )


def epoch_seconds(expr: pl.Expr) -> pl.Expr:
    """Unix seconds (int or float) → Datetime(us, UTC)."""
    micros = (expr.cast(pl.Float64, strict=False) * 1_000_000).round().cast(pl.Int64, strict=False)
    return pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")


def scan_split_lines(path: Path, separator: str, names: Sequence[str]) -> pl.LazyFrame:
    """A headerless delimited text file as one String column per field.

    Read line by line rather than with scan_csv so that a line with too many or too few fields
    is counted (column ``_fields``) instead of aborting the whole read; no quoting, as in the
    MovieLens and Criteo dumps.
    """
    last = len(names) - 1
    split = pl.col("_line").str.split_exact(separator, last)
    return (
        pl.scan_lines(path, name="_line", row_index_name=ROW, row_index_offset=1)
        # Files written on Windows end their lines with CR, which would stick to the last field.
        .with_columns(pl.col("_line").str.strip_chars_end("\r"))
        .with_columns(
            (pl.col("_line").str.count_matches(separator, literal=True) + 1).alias("_fields"),
            split.alias("_split"),
        )
        .with_columns(
            *[
                blank_to_null(pl.col("_split").struct.field(f"field_{i}")).alias(n)
                for i, n in enumerate(names)
            ]
        )
        .drop("_split")
    )


def field_count_rule(expected: int, separator: str) -> Rule:
    """Lines with the wrong number of fields (blank lines included) are malformed."""
    return Rule(
        "malformed_line",
        pl.col("_fields") != expected,
        structural=True,
        message=f"expected {expected} fields separated by {separator!r}",
    )


def require_columns(names: Sequence[str], required: Sequence[str], source: str) -> None:
    """Fail naming the file and the columns when the header lacks any of ``required``."""
    missing = [c for c in required if c not in names]
    if missing:
        raise SchemaError(f"{source}: missing required column(s) {missing}; found {list(names)}")
