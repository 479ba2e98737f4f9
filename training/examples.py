"""Turn a conformed event log into model inputs: labelled CTR examples and implicit
feedback for retrieval. All lazy Polars expressions; nothing is collected here."""

from __future__ import annotations

import polars as pl

# Interactions that count as positive implicit feedback for retrieval.
POSITIVE_EVENTS: tuple[str, ...] = ("click", "purchase", "rating")


def ctr_examples(events: pl.LazyFrame, conversions: bool = False) -> pl.LazyFrame:
    """One row per impression with ``label`` = 1 when the same page view (request_id)
    has a click on the same item. Impressions without a request_id are matched to clicks
    by (user_id, item_id, calendar day). With ``conversions``, also ``converted`` = 1 when
    the clicked impression was followed by a purchase of the item, matched the same way
    (ESMM's click-and-purchase label, see training.cvr)."""
    impressions = events.filter(pl.col("event") == "impression").with_columns(
        pl.col("ts").dt.date().alias("_day")
    )
    examples = _matched(impressions, events, "click", "label")
    if conversions:
        examples = _matched(examples, events, "purchase", "converted").with_columns(
            (pl.col("converted") * pl.col("label")).alias("converted")
        )
    return examples.drop("_day")


def _matched(impressions: pl.LazyFrame, events: pl.LazyFrame, kind: str, name: str) -> pl.LazyFrame:
    """``impressions`` with ``name`` = 1 where an event of ``kind`` shares the page view and
    item (or, without a request_id, the user, item and day), else 0."""
    found = events.filter(pl.col("event") == kind).with_columns(
        pl.col("ts").dt.date().alias("_day")
    )
    by_request = (
        found.filter(pl.col("request_id").is_not_null())
        .select("request_id", "item_id")
        .unique()
        .with_columns(pl.lit(1, dtype=pl.Int8).alias("_by_request"))
    )
    by_day = (
        found.filter(pl.col("request_id").is_null())
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
            ).alias(name)
        )
        .drop("_by_request", "_by_day")
    )


def positives(events: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct (user_id, item_id) pairs with positive feedback, with their first time."""
    return (
        events.filter(pl.col("event").is_in(POSITIVE_EVENTS))
        .group_by("user_id", "item_id")
        .agg(pl.col("ts").min())
    )
