"""Pseudonymous ids at rest for logs read from raw sources: every ``user_id`` replaced by
HMAC-SHA256(key, id) (:func:`kernels.pseudonym.pseudonym`, what the engine computes at its
request boundary with the same key), so the bundles trained from them hold no raw id.

A log the engine wrote with ``pseudonym_key_file`` set is pseudonymous already: train it without
``--pseudonym-key``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from kernels.pseudonym import pseudonym, read_key


def pseudonymise(frame: pl.LazyFrame, key_file: Path | None) -> pl.LazyFrame:
    """``frame`` with its ``user_id`` column (cast to text) replaced by the pseudonyms; the
    distinct ids are collected once to key the map (the HMAC has no Polars expression)."""
    if key_file is None or "user_id" not in frame.collect_schema().names():
        return frame
    key = read_key(key_file)
    ids = frame.select(pl.col("user_id").cast(pl.String).unique()).collect()["user_id"]
    mapping = pl.LazyFrame(
        {"user_id": ids, "_pseudonym": [pseudonym(key, u) if u else u for u in ids.to_list()]},
        schema={"user_id": pl.String, "_pseudonym": pl.String},
    )
    return (
        frame.with_columns(pl.col("user_id").cast(pl.String))
        .join(mapping, on="user_id", how="left", nulls_equal=True)
        .with_columns(pl.col("_pseudonym").alias("user_id"))
        .drop("_pseudonym")
    )
