"""Turn a conformed event log into model inputs: labelled CTR examples and implicit
feedback for retrieval. All lazy Polars expressions; nothing is collected here."""

from __future__ import annotations

import polars as pl

# Interactions that count as positive implicit feedback for retrieval.
POSITIVE_EVENTS: tuple[str, ...] = ("click", "purchase", "rating")


def ctr_examples(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per impression with ``label`` = 1 when the same page view (request_id)
    has a click on the same item. Impressions without a request_id are matched to clicks
    by (user_id, item_id, calendar day)."""
    impressions = events.filter(pl.col("event") == "impression").with_columns(
        pl.col("ts").dt.date().alias("_day")
    )
    clicks = events.filter(pl.col("event") == "click").with_columns(
        pl.col("ts").dt.date().alias("_day")
    )
    by_request = (
        clicks.filter(pl.col("request_id").is_not_null())
        .select("request_id", "item_id")
        .unique()
        .with_columns(pl.lit(1, dtype=pl.Int8).alias("_by_request"))
    )
    by_day = (
        clicks.filter(pl.col("request_id").is_null())
        .select("user_id", "item_id", "_day")
        .unique()
        .with_columns(pl.lit(1, dtype=pl.Int8).alias("_by_day"))
    )
    return (
        impressions.join(by_request, on=["request_id", "item_id"], how="left")
        .join(by_day, on=["user_id", "item_id", "_day"], how="left")
        .with_columns(
            pl.max_horizontal(
                pl.col("_by_request").fill_null(0), pl.col("_by_day").fill_null(0)
            ).alias("label")
        )
        .drop("_by_request", "_by_day", "_day")
    )


def positives(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct (user_id, item_id) pairs with positive feedback, with their first time."""
    return (
        events.filter(pl.col("event").is_in(POSITIVE_EVENTS))
        .group_by("user_id", "item_id")
        .agg(pl.col("ts").min())
    )
