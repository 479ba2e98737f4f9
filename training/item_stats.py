"""Per-item statistics from a conformed event log: popularity, smoothed CTR, recency, price.

Only events at or before ``as_of`` count. Columns: ``n_<event>`` per event type, ``n_events``,
``n_users`` (distinct users), ``revenue`` (sum of purchase value), ``mean_rating``,
``first_seen``, ``last_seen``, ``days_since_last_event``, ``age_days`` (since first seen),
``price`` (the items table's price where given, else the median price in the events), and
``ctr`` / ``ctr_smoothed`` where the log has impressions.

Smoothed CTR is the posterior mean under a Beta(alpha, beta) prior fitted to the items' own
CTRs by the method of moments (:func:`fit_beta_prior`): ``(clicks + alpha) /
(impressions + alpha + beta)``, so an item with 1 click in 2 impressions is pulled towards
the typical CTR instead of claiming 50%.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from training.event_time import days_before, require_aware
from training.schema import EVENT_TYPES

# Items with fewer impressions than this are too noisy to inform the prior.
MIN_IMPRESSIONS_FOR_PRIOR = 10
# Prior strength (alpha + beta) when the data cannot estimate one: as weak as one impression.
FALLBACK_PRIOR_STRENGTH = 1.0


@dataclass(frozen=True)
class BetaPrior:
    """A Beta(alpha, beta) prior on item CTR and how many items it was fitted on."""

    alpha: float
    beta: float
    n_items: int

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def fit_beta_prior(
    clicks: npt.ArrayLike,
    impressions: npt.ArrayLike,
    min_impressions: int = MIN_IMPRESSIONS_FOR_PRIOR,
) -> BetaPrior:
    """Method-of-moments Beta prior over the CTRs of items with ``min_impressions`` or more.

    With m and v the mean and variance of those CTRs, alpha + beta = m (1 - m) / v - 1,
    alpha = m (alpha + beta). When fewer than two items qualify, or their CTRs do not vary
    (v = 0) or exceed what a Beta allows, the prior keeps the pooled CTR as its mean with
    strength :data:`FALLBACK_PRIOR_STRENGTH`. Clicks are capped at impressions.
    """
    n = np.asarray(impressions, dtype=np.float64)
    c = np.minimum(np.asarray(clicks, dtype=np.float64), n)
    if n.sum() <= 0:
        raise ValueError("a CTR prior needs impressions")
    eligible = n >= min_impressions
    pooled = float(np.clip(c.sum() / n.sum(), 1e-6, 1 - 1e-6))
    if eligible.sum() >= 2:
        ctr = c[eligible] / n[eligible]
        m, v = float(ctr.mean()), float(ctr.var())
        if 0 < m < 1 and 0 < v < m * (1 - m):
            strength = m * (1 - m) / v - 1
            return BetaPrior(m * strength, (1 - m) * strength, int(eligible.sum()))
    return BetaPrior(
        pooled * FALLBACK_PRIOR_STRENGTH,
        (1 - pooled) * FALLBACK_PRIOR_STRENGTH,
        int(eligible.sum()),
    )


def item_stats(
    events: pl.LazyFrame,
    as_of: datetime,
    items: pl.LazyFrame | None = None,
    prior: BetaPrior | None = None,
) -> pl.DataFrame:
    """One row per item with an event at or before ``as_of`` (see the module doc).

    ``prior`` defaults to :func:`fit_beta_prior` over these items.
    """
    past = events.filter(pl.col("ts") <= require_aware(as_of, "as_of"))
    stats = (
        past.group_by("item_id")
        .agg(
            *[(pl.col("event") == e).sum().cast(pl.Int64).alias(f"n_{e}") for e in EVENT_TYPES],
            pl.len().cast(pl.Int64).alias("n_events"),
            pl.col("user_id").n_unique().cast(pl.Int64).alias("n_users"),
            pl.col("value")
            .filter(pl.col("event") == "purchase")
            .sum()
            .fill_null(0.0)
            .alias("revenue"),
            pl.col("value").filter(pl.col("event") == "rating").mean().alias("mean_rating"),
            pl.col("ts").min().alias("first_seen"),
            pl.col("ts").max().alias("last_seen"),
            pl.col("price").median().alias("_event_price"),
        )
        .with_columns(
            days_before(as_of, pl.col("last_seen")).alias("days_since_last_event"),
            days_before(as_of, pl.col("first_seen")).alias("age_days"),
        )
    )
    if items is not None and "price" in items.collect_schema().names():
        prices = items.select(
            pl.col("item_id").cast(pl.String), pl.col("price").cast(pl.Float64).alias("_item_price")
        )
        stats = stats.join(prices, on="item_id", how="left").with_columns(
            pl.coalesce("_item_price", "_event_price").alias("price")
        )
    else:
        stats = stats.with_columns(pl.col("_event_price").alias("price"))
    table = stats.drop("_event_price", "_item_price", strict=False).sort("item_id").collect()
    return _with_ctr(table, prior)


def _with_ctr(table: pl.DataFrame, prior: BetaPrior | None) -> pl.DataFrame:
    impressions = pl.col("n_impression")
    clicks = pl.min_horizontal(pl.col("n_click"), impressions)
    if table["n_impression"].sum() == 0:
        return table.with_columns(
            pl.lit(None, dtype=pl.Float64).alias("ctr"),
            pl.lit(None, dtype=pl.Float64).alias("ctr_smoothed"),
        )
    if prior is None:
        prior = fit_beta_prior(table["n_click"].to_numpy(), table["n_impression"].to_numpy())
    return table.with_columns(
        pl.when(impressions > 0).then(clicks / impressions).alias("ctr"),
        ((clicks + prior.alpha) / (impressions + prior.alpha + prior.beta)).alias("ctr_smoothed"),
    )
