"""Leak-free temporal train/valid/test splits of a conformed event log.

Two kinds, both returning lazy frames plus a JSON-able ``spec`` that bundles record:

- :func:`global_time_split`: one time cut for everyone. Nothing in test happened at or before
  the cut, so no model sees any of the test period; users first seen after the cut are cold.
- :func:`per_user_split`: each user's last N (or last fraction of) events are test, the ones
  before them valid, the rest train. Within a user, test never precedes train; across users
  it can (the usual leave-last-out protocol for MovieLens-style benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from training.errors import NotEnoughData
from training.event_time import require_aware

# Ties in time are broken by these columns so that splits are deterministic.
ORDER: tuple[str, ...] = ("ts", "event", "item_id")


@dataclass(frozen=True)
class Split:
    """Train/valid/test parts of one event log and the description of how they were cut."""

    train: pl.LazyFrame
    valid: pl.LazyFrame
    test: pl.LazyFrame
    spec: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The spec plus rows and users per part, and test users never seen in train."""
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        sizes = pl.collect_all(
            [
                lf.select(pl.len().alias("rows"), pl.col("user_id").n_unique().alias("users"))
                for lf in parts.values()
            ]
            + [
                self.test.select("user_id")
                .unique()
                .join(self.train.select("user_id").unique(), on="user_id", how="anti")
                .select(pl.len())
            ]
        )
        described: dict[str, Any] = dict(self.spec)
        for name, frame in zip(parts, sizes[:3], strict=True):
            described[name] = {"rows": int(frame["rows"][0]), "users": int(frame["users"][0])}
        described["test_users_not_in_train"] = int(sizes[3].item())
        return described


def global_time_split(
    events: pl.LazyFrame,
    *,
    test_cut: datetime | None = None,
    valid_cut: datetime | None = None,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.0,
) -> Split:
    """Split at one or two time cuts: train ts <= valid_cut < valid ts <= test_cut < test ts.

    Without ``test_cut``, the cuts are the event-time quantiles that leave ``test_fraction``
    (and ``valid_fraction``) of the events after them; events tied with a cut stay on its earlier
    side, so the later parts may be slightly smaller than asked. Without a validation part
    (``valid_fraction=0`` and no ``valid_cut``) valid is empty.
    """
    from_fractions = test_cut is None
    if test_cut is None:
        _check_fractions(test_fraction, valid_fraction)
        quantiles = [1.0 - test_fraction, 1.0 - test_fraction - valid_fraction]
        test_cut, valid_at = _time_quantiles(events, quantiles)
        if valid_cut is None and valid_fraction > 0:
            valid_cut = valid_at
    if valid_cut is None:
        valid_cut = test_cut
    require_aware(test_cut, "test_cut")
    require_aware(valid_cut, "valid_cut")
    if valid_cut > test_cut:
        raise ValueError(f"valid_cut {valid_cut} is after test_cut {test_cut}")
    ts = pl.col("ts")
    spec = {
        "kind": "global_time",
        "test_cut": test_cut.isoformat(),
        "valid_cut": valid_cut.isoformat(),
        "test_fraction": test_fraction if from_fractions else None,
        "valid_fraction": valid_fraction if from_fractions else None,
        "rule": "train: ts <= valid_cut; valid: valid_cut < ts <= test_cut; test: ts > test_cut",
    }
    return Split(
        train=events.filter(ts <= valid_cut),
        valid=events.filter((ts > valid_cut) & (ts <= test_cut)),
        test=events.filter(ts > test_cut),
        spec=spec,
    )


def per_user_split(
    events: pl.LazyFrame,
    *,
    test_last_n: int | None = None,
    test_fraction: float | None = None,
    valid_last_n: int | None = None,
    valid_fraction: float | None = None,
    min_train: int = 1,
) -> Split:
    """Each user's last events (in :data:`ORDER`) to test, the ones before them to valid.

    Give test (and optionally valid) as a count (``*_last_n``) or a share (``*_fraction``,
    rounded half up per user: 20% of 12 events is 2, of 13 is 3). Every user keeps at least
    ``min_train`` training events: when a user has too few, valid shrinks first, then test
    (a user with ``min_train`` events or fewer is all train).
    """
    n = pl.len().over("user_id")
    n_test = _per_user_count(n, test_last_n, test_fraction, "test")
    if valid_last_n is None and valid_fraction is None:
        n_valid = pl.lit(0, dtype=pl.Int64)
    else:
        n_valid = _per_user_count(n, valid_last_n, valid_fraction, "valid")
    if test_fraction is not None and valid_fraction is not None:
        _check_fractions(test_fraction, valid_fraction)
    if min_train < 0:
        raise ValueError(f"min_train must be >= 0, got {min_train}")
    available = pl.max_horizontal(n.cast(pl.Int64) - min_train, pl.lit(0))
    capped_test = pl.min_horizontal(n_test, available)
    capped_valid = pl.min_horizontal(n_valid, available - capped_test)
    # A lexicographic rank of the ORDER struct: 2.5x faster than an ordered window on 10M rows.
    rank = pl.struct(list(ORDER)).rank("ordinal").over("user_id").cast(pl.Int64)
    from_end = n.cast(pl.Int64) - rank
    part = (
        pl.when(from_end < capped_test)
        .then(pl.lit("test"))
        .when(from_end < capped_test + capped_valid)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    tagged = events.with_columns(part.alias("_part"))
    spec = {
        "kind": "per_user",
        "test_last_n": test_last_n,
        "test_fraction": test_fraction,
        "valid_last_n": valid_last_n,
        "valid_fraction": valid_fraction,
        "min_train": min_train,
        "order": list(ORDER),
        "rule": "per user, in order: last test events to test, the valid events before them "
        "to valid, the rest to train; at least min_train events stay in train",
    }
    return Split(
        train=_part(tagged, "train"),
        valid=_part(tagged, "valid"),
        test=_part(tagged, "test"),
        spec=spec,
    )


def _part(tagged: pl.LazyFrame, name: str) -> pl.LazyFrame:
    return tagged.filter(pl.col("_part") == name).drop("_part")


def _per_user_count(n: pl.Expr, last_n: int | None, fraction: float | None, what: str) -> pl.Expr:
    if last_n is not None and fraction is None:
        if last_n < 0:
            raise ValueError(f"{what}_last_n must be >= 0, got {last_n}")
        return pl.lit(last_n, dtype=pl.Int64)
    if fraction is not None and last_n is None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{what}_fraction must lie in [0, 1), got {fraction}")
        return (n.cast(pl.Float64) * fraction + 0.5).floor().cast(pl.Int64)
    raise ValueError(f"give exactly one of {what}_last_n and {what}_fraction")


def _check_fractions(test_fraction: float, valid_fraction: float) -> None:
    if not (0.0 < test_fraction < 1.0 and 0.0 <= valid_fraction < 1.0):
        raise ValueError("test_fraction must lie in (0, 1) and valid_fraction in [0, 1)")
    if test_fraction + valid_fraction >= 1.0:
        raise ValueError("test_fraction + valid_fraction must leave some training data")


def _time_quantiles(events: pl.LazyFrame, qs: list[float]) -> list[datetime]:
    """Event-time quantiles, each an actual event time (lower interpolation)."""
    values = lower_quantiles(events, pl.col("ts").dt.epoch("us"), qs)
    if values[0] is None:
        raise NotEnoughData("cannot split an empty event log: no events left to train on")
    return [
        pl.select(pl.from_epoch(pl.lit(int(v)), time_unit="us").dt.replace_time_zone("UTC")).item()
        for v in values
    ]


# Buckets of the histogram that narrows a quantile down, and the rows at most collected to
# pick it exactly: the memory a quantile takes, whatever the log's size.
QUANTILE_BUCKETS = 1 << 16
QUANTILE_EXACT_ROWS = 1 << 20


def lower_quantiles(frame: pl.LazyFrame, expr: pl.Expr, qs: list[float]) -> list[int | None]:
    """Exact quantiles (``interpolation="lower"``, Polars' rule: the value of rank
    ``floor((n - 1) * q)`` among the non-null values) of an integer expression, in memory
    bounded by :data:`QUANTILE_BUCKETS` and :data:`QUANTILE_EXACT_ROWS` rather than by the
    rows: Polars' own quantile holds the whole column, even on the streaming engine. Counts
    the values per histogram bucket, keeps the bucket holding the rank, and repeats on it until
    it is small enough to sort (a few scans of the column); None for no values."""
    x = expr.alias("_x")
    stats = frame.select(x.count().alias("n"), x.min().alias("lo"), x.max().alias("hi")).collect()
    n, lo, hi = stats.row(0)
    if not n:
        return [None for _ in qs]
    return [_select_rank(frame, x, int((n - 1) * q), int(lo), int(hi), int(n)) for q in qs]


def _select_rank(frame: pl.LazyFrame, x: pl.Expr, rank: int, lo: int, hi: int, n: int) -> int:
    """The value of 0-based ``rank`` among the ``n`` values of ``x`` in [lo, hi]."""
    while n > QUANTILE_EXACT_ROWS and hi > lo:
        width = (hi - lo) // QUANTILE_BUCKETS + 1
        inside = frame.select(x).filter(pl.col("_x").is_between(lo, hi))
        hist = (
            inside.group_by(((pl.col("_x") - lo) // width).alias("b"))
            .agg(pl.len().alias("n"))
            .sort("b")
            .collect()
        )
        before = hist["n"].cum_sum() - hist["n"]
        at = int((hist["n"].cum_sum() <= rank).sum())
        rank -= int(before[at])
        n = int(hist["n"][at])
        b = int(hist["b"][at])
        lo, hi = lo + b * width, min(hi, lo + (b + 1) * width - 1)
    if hi == lo:
        return lo
    values = (
        frame.select(x).filter(pl.col("_x").is_between(lo, hi)).collect()["_x"].sort().to_numpy()
    )
    return int(values[rank])
