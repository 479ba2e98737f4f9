"""History features of CTR models: a user's past impressions, clicks and smoothed CTR,
overall and per value of an item attribute (the category), as a production ranker reads them
from its real-time store.

Training rows get them point-in-time: counted from the events strictly before each
impression's timestamp, so a row never sees its own click or anything later. The bundle ships
the same statistics as of the end of the log for serving. Both go through
:func:`kernels.featurize.history_values`, the one definition of the statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from kernels.featurize import (
    HISTORY_STATS,
    LOGIT_EPS,
    NumericField,
    history_field_name,
    history_values,
)

# The events a history counts (their own timestamps: when the click happened, not the
# impression's; logs that stamp clicks with the impression's time must not use histories).
HISTORY_EVENTS: tuple[str, ...] = ("impression", "click")


@dataclass(frozen=True)
class HistorySpec:
    """Which histories, and how their CTR is smoothed."""

    # Item attributes crossed with the user (one history per attribute), beside the user's own.
    by: tuple[str, ...]
    prior: float
    strength: float

    @property
    def keys(self) -> list[str | None]:
        """None: the user's overall history; else the item attribute it is keyed by."""
        return [None, *self.by]

    def to_json(self) -> dict[str, Any]:
        return {
            "events": list(HISTORY_EVENTS),
            "by": list(self.by),
            "prior": self.prior,
            "strength": self.strength,
            "rule": "training rows: events strictly before the impression; the shipped tables: "
            "every event of the log",
        }


def prefix(by: str | None) -> str:
    """Column prefix of a history: ``user`` or ``user_<attribute>``."""
    return "user" if by is None else f"user_{by}"


def history_columns(spec: HistorySpec) -> list[str]:
    return [history_field_name(prefix(by), s) for by in spec.keys for s in HISTORY_STATS]


def _counted(events: pl.LazyFrame, items: pl.DataFrame | None, by: Sequence[str]) -> pl.LazyFrame:
    """Impression and click events (flags ``_imp``, ``_clk``) with the item attributes ``by``."""
    counted = events.filter(pl.col("event").is_in(HISTORY_EVENTS)).select(
        "user_id",
        "item_id",
        "ts",
        (pl.col("event") == "impression").cast(pl.Int64).alias("_imp"),
        (pl.col("event") == "click").cast(pl.Int64).alias("_clk"),
    )
    if by:
        if items is None or any(b not in items.columns for b in by):
            raise ValueError(f"histories by {list(by)} need those columns in the items table")
        attrs = items.lazy().select(pl.col("item_id"), *[pl.col(b).cast(pl.String) for b in by])
        counted = counted.join(attrs, on="item_id", how="left")
    return counted


def _with_values(frame: pl.LazyFrame, by: str | None, spec: HistorySpec) -> pl.LazyFrame:
    """Replace the raw counts ``_imp``/``_clk`` by the history's named statistics."""
    p = prefix(by)
    names = {s: history_field_name(p, s) for s in HISTORY_STATS}
    imp, clk = pl.col("_imp").cast(pl.Float64), pl.col("_clk").cast(pl.Float64)
    values = history_values(imp, clk, spec.prior, spec.strength)
    return frame.with_columns(values[s].alias(names[s]) for s in HISTORY_STATS).drop("_imp", "_clk")


def with_history_before(
    examples: pl.LazyFrame, events: pl.LazyFrame, items: pl.DataFrame | None, spec: HistorySpec
) -> pl.LazyFrame:
    """``examples`` (impressions: user_id, ts and the ``by`` attributes) with every history
    statistic counted over the events strictly before the row's ``ts``. A row whose attribute
    is missing gets nulls for that history (the schema's default)."""
    counted = _counted(events, items, spec.by)
    for by in spec.keys:
        keys = ["user_id"] + ([by] if by else [])
        per_ts = (
            counted.group_by(*keys, "ts")
            .agg(pl.col("_imp").sum(), pl.col("_clk").sum())
            .sort(*keys, "ts")
            # Running totals minus the row's own timestamp: only strictly earlier events.
            .with_columns(
                (pl.col(c).cum_sum().over(keys) - pl.col(c)).alias(c) for c in ("_imp", "_clk")
            )
        )
        # Every impression has an entry at its own ts (its own event is counted there).
        examples = _with_values(examples.join(per_ts, on=[*keys, "ts"], how="left"), by, spec)
    return examples


def history_tables(
    events: pl.LazyFrame, items: pl.DataFrame | None, spec: HistorySpec
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The statistics over every event of the log, for serving: one row per user (the user's
    own history) and, per ``by`` attribute, one row per (user, value) seen."""
    counted = _counted(events, items, spec.by)
    frames = {}
    for by in spec.keys:
        keys = ["user_id"] + ([by] if by else [])
        totals = (
            counted.filter(*[pl.col(k).is_not_null() for k in keys])
            .group_by(keys)
            .agg(pl.col("_imp").sum(), pl.col("_clk").sum())
            .sort(keys)
        )
        frames[by] = _with_values(totals, by, spec).collect()
    user = frames.pop(None)
    return user, {b: f for b, f in frames.items() if b is not None}


def _transformed(name: str, transform: str) -> pl.Expr:
    """Polars twin of :meth:`FeatureSchema.encode_numeric`'s transforms, for the statistics."""
    x = pl.col(name)
    if transform == "log1p":
        return x.clip(lower_bound=0.0).log1p()
    x = x.clip(LOGIT_EPS, 1.0 - LOGIT_EPS)
    return x.log() - (1.0 - x).log()


def history_fields(examples: pl.LazyFrame, spec: HistorySpec) -> list[NumericField]:
    """The numeric fields of the histories: counts as log1p, the CTR as a logit, standardised on
    training rows; a stranger (no row in the store) gets zero counts and the prior CTR."""
    specs = []
    for by in spec.keys:
        for s in HISTORY_STATS:
            name = history_field_name(prefix(by), s)
            specs.append((name, by, "logit" if s == "ctr" else "log1p"))
    value = {name: _transformed(name, t) for name, _, t in specs}
    stats = (
        examples.filter(pl.col("split") == "train")
        .select(
            *[value[n].mean().alias(f"{n}|mean") for n, _, _ in specs],
            *[value[n].std().alias(f"{n}|std") for n, _, _ in specs],
        )
        .collect()
        .row(0, named=True)
    )
    return [
        NumericField(
            name,
            "user" if by is None else "user_item",
            transform=t,  # type: ignore[arg-type]
            mean=float(stats[f"{name}|mean"] or 0.0),
            std=float(stats[f"{name}|std"] or 1.0) or 1.0,
            default=spec.prior if name.endswith("_ctr") else 0.0,
            by=by,
        )
        for name, by, t in specs
    ]
