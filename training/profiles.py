"""User profiles ("user portrait") from a conformed event log: RFM, activity, category affinity.

Only events at or before ``as_of`` count, so a profile built for a split's training part never
sees the test period. Definitions (all per user):

- ``recency_days``: days from the last *engagement* event (click, purchase or rating, by
  default) to ``as_of``; null for a user who never engaged. Impressions are exposure, not
  intent, so they do not make a user recent.
- ``frequency``: number of engagement transactions: distinct ``request_id`` values among the
  engagement events (an invoice, a page view), each event without a request counting alone.
- ``monetary``: sum of ``value`` over purchases (0 without purchases).
- ``n_<event>`` per event type, ``n_events``; ``first_seen``, ``last_seen``,
  ``days_since_first_seen`` (over all events).
- ``r_score``, ``f_score``, ``m_score`` (1-5): quantile scores among engaged users,
  ``1 + floor(5 * share of engaged users with a strictly worse value)``, so tied users share
  a score; lower recency is better. Null for users who never engaged.
- ``rfm_segment``: see :data:`RFM_SEGMENT_RULES`.
- ``top_category``, ``top_category_share`` when an items table with ``category`` is given
  (:func:`category_affinities` has every category's share).

K-means segments and per-item statistics live in :mod:`training.segments` and
:mod:`training.item_stats`, re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from training.event_time import days_before, require_aware
from training.item_stats import BetaPrior, fit_beta_prior, item_stats
from training.schema import EVENT_TYPES
from training.segments import KMeansSegments, kmeans_segments

__all__ = [
    "ENGAGEMENT_EVENTS",
    "RFM_SEGMENT_RULES",
    "BetaPrior",
    "KMeansSegments",
    "category_affinities",
    "fit_beta_prior",
    "item_stats",
    "kmeans_segments",
    "rfm_segment",
    "user_profiles",
]

ENGAGEMENT_EVENTS: tuple[str, ...] = ("click", "purchase", "rating")

# Named RFM segments, first match wins. ``fm`` is (F + M) / 2, or F alone when the log has no
# revenue at all (ratings or clicks only), so that those logs still reach the top segments.
RFM_SEGMENT_RULES: tuple[tuple[str, str], ...] = (
    ("champions", "R >= 4 and fm >= 4: recent, frequent, big spenders"),
    ("new", "R >= 4 and F == 1: recent, but only the lowest frequency so far"),
    ("loyal", "R >= 3 and fm >= 3: fairly recent and regular"),
    ("potential", "R >= 3: fairly recent, not yet regular"),
    ("at_risk", "fm >= 3: used to be regular or valuable, not seen lately (R <= 2)"),
    ("hibernating", "otherwise: not recent, infrequent, low value"),
    ("never_engaged", "no engagement event at all (impressions only)"),
)


def user_profiles(
    events: pl.LazyFrame,
    as_of: datetime,
    items: pl.LazyFrame | None = None,
    engagement: Sequence[str] = ENGAGEMENT_EVENTS,
) -> pl.DataFrame:
    """One row per user seen at or before ``as_of``, with the features in the module doc."""
    past = events.filter(pl.col("ts") <= require_aware(as_of, "as_of"))
    engaged = pl.col("event").is_in(list(engagement))
    request = pl.col("request_id").filter(engaged)
    profile = past.group_by("user_id").agg(
        pl.col("ts").min().alias("first_seen"),
        pl.col("ts").max().alias("last_seen"),
        pl.col("ts").filter(engaged).max().alias("_last_engaged"),
        (request.drop_nulls().n_unique() + request.is_null().sum())
        .cast(pl.Int64)
        .alias("frequency"),
        pl.col("value")
        .filter(pl.col("event") == "purchase")
        .sum()
        .fill_null(0.0)
        .alias("monetary"),
        pl.len().cast(pl.Int64).alias("n_events"),
        *[(pl.col("event") == e).sum().cast(pl.Int64).alias(f"n_{e}") for e in EVENT_TYPES],
    )
    profile = profile.with_columns(
        days_before(as_of, pl.col("_last_engaged")).alias("recency_days"),
        days_before(as_of, pl.col("first_seen")).alias("days_since_first_seen"),
    ).drop("_last_engaged")
    profile = _with_rfm(profile)
    if items is not None:
        top = (
            _affinities(events, items, as_of, engagement)
            .group_by("user_id", maintain_order=True)
            .agg(
                pl.col("category").first().alias("top_category"),
                pl.col("share").first().alias("top_category_share"),
            )
        )
        profile = profile.join(top, on="user_id", how="left")
    return profile.sort("user_id").collect()


def category_affinities(
    events: pl.LazyFrame,
    items: pl.LazyFrame,
    as_of: datetime,
    engagement: Sequence[str] = ENGAGEMENT_EVENTS,
) -> pl.DataFrame:
    """Share of each user's engagement events per item category, largest share first.

    Events on items without a category are left out of the shares.
    """
    return _affinities(events, items, as_of, engagement).collect()


def _affinities(
    events: pl.LazyFrame, items: pl.LazyFrame, as_of: datetime, engagement: Sequence[str]
) -> pl.LazyFrame:
    if "category" not in items.collect_schema().names():
        raise ValueError("category affinities need an items table with a 'category' column")
    categories = items.select(pl.col("item_id").cast(pl.String), pl.col("category").cast(pl.String))
    return (
        events.filter(
            pl.col("ts") <= require_aware(as_of, "as_of"), pl.col("event").is_in(list(engagement))
        )
        .join(categories, on="item_id", how="inner")
        .filter(pl.col("category").is_not_null())
        .group_by("user_id", "category")
        .agg(pl.len().cast(pl.Int64).alias("interactions"))
        .with_columns(
            (pl.col("interactions") / pl.col("interactions").sum().over("user_id")).alias("share")
        )
        .sort(["user_id", "share", "category"], descending=[False, True, False])
    )


def _with_rfm(profile: pl.LazyFrame) -> pl.LazyFrame:
    engaged = pl.col("frequency") > 0
    scored = profile.with_columns(
        _quintile_score(-pl.col("recency_days"), engaged).alias("r_score"),
        _quintile_score(pl.col("frequency"), engaged).alias("f_score"),
        _quintile_score(pl.col("monetary"), engaged).alias("m_score"),
    )
    has_revenue = (pl.col("monetary") > 0).any()
    return scored.with_columns(rfm_segment(has_revenue).alias("rfm_segment"))


def rfm_segment(has_revenue: pl.Expr | bool = True) -> pl.Expr:
    """The named segment (:data:`RFM_SEGMENT_RULES`) from ``r_score``, ``f_score``, ``m_score``.

    A null ``f_score`` means the user never engaged.
    """
    r, f, m = pl.col("r_score"), pl.col("f_score"), pl.col("m_score")
    fm = pl.when(has_revenue).then((f + m) / 2).otherwise(f)
    return (
        pl.when(f.is_null())
        .then(pl.lit("never_engaged"))
        .when((r >= 4) & (fm >= 4))
        .then(pl.lit("champions"))
        .when((r >= 4) & (f == 1))
        .then(pl.lit("new"))
        .when((r >= 3) & (fm >= 3))
        .then(pl.lit("loyal"))
        .when(r >= 3)
        .then(pl.lit("potential"))
        .when(fm >= 3)
        .then(pl.lit("at_risk"))
        .otherwise(pl.lit("hibernating"))
    )


def _quintile_score(value: pl.Expr, eligible: pl.Expr) -> pl.Expr:
    """1 + floor(5 * share of eligible users with a strictly lower value); null if not eligible."""
    masked = pl.when(eligible).then(value)
    below = masked.rank("min") - 1
    score = 1 + (5 * below / eligible.sum()).floor()
    return pl.when(eligible).then(score.clip(1, 5).cast(pl.Int8))
