"""Time helpers shared by the feature and split code: event times are Datetime(us, UTC)."""

from __future__ import annotations

from datetime import datetime

import polars as pl

_DAY_US = 86_400 * 1_000_000


def require_aware(moment: datetime, what: str = "time") -> datetime:
    """Refuse naive datetimes: comparing one with UTC event times would guess a zone."""
    if moment.tzinfo is None:
        raise ValueError(f"{what} {moment} must be timezone-aware (event times are UTC)")
    return moment


def days_before(as_of: datetime, moment: pl.Expr) -> pl.Expr:
    """Fractional days from ``moment`` to ``as_of`` (null where ``moment`` is null)."""
    return (pl.lit(require_aware(as_of, "as_of")) - moment).dt.total_microseconds() / _DAY_US
