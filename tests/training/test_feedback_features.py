"""Events from the feedback log train a CTR model whose features are the request's context,
never the A/B arm or the model that served the event."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from training.pipeline import Dataset, ctr_schema


def test_serving_columns_of_the_feedback_log_are_not_features() -> None:
    events = pl.LazyFrame(
        {
            "user_id": ["u1"],
            "item_id": ["i1"],
            "ts": [datetime(2026, 11, 25, tzinfo=UTC)],
            "event": ["click"],
            "experiment": ["exp"],
            "variant": ["B"],
            "model": ["ctr"],
            "model_version": ["3"],
            "device": ["ios"],
        }
    )
    examples = pl.LazyFrame({"split": ["train", "train"], "price": [1.0, 3.0]})
    fields = ctr_schema(Dataset(events=events), examples, 1024).field_names
    assert "device" in fields
    assert not {"experiment", "variant", "model", "model_version"} & set(fields)
