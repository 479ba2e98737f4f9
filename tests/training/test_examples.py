"""CTR labels, implicit positives and feature encoding on hand-made frames."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from kernels import feature_buckets
from kernels.featurize import CategoricalField, FeatureSchema, NumericField
from training.examples import ctr_examples, positives
from training.pipeline import encode_frame
from training.schema import conform_events


def _t(minute: int) -> datetime:
    return datetime(2026, 1, 1, 12, minute, tzinfo=UTC)


def _log(rows: list[tuple]) -> pl.LazyFrame:
    frame = pl.DataFrame(
        rows, schema=["user_id", "item_id", "ts", "event", "request_id"], orient="row"
    )
    return conform_events(frame.lazy())


def test_clicks_label_their_impression_by_request_then_by_day() -> None:
    events = _log(
        [
            ("u1", "a", _t(0), "impression", "r1"),
            ("u1", "b", _t(0), "impression", "r1"),
            ("u1", "a", _t(1), "click", "r1"),
            ("u1", "a", _t(5), "impression", "r2"),  # same item, other request: not clicked
            ("u2", "c", _t(0), "impression", None),
            ("u2", "c", _t(9), "click", None),  # no request id: matched by user, item, day
            ("u2", "d", _t(0), "impression", None),
        ]
    )
    out = ctr_examples(events).sort("user_id", "item_id", "ts").collect()
    assert out.select("user_id", "item_id", "label").rows() == [
        ("u1", "a", 1),
        ("u1", "a", 0),
        ("u1", "b", 0),
        ("u2", "c", 1),
        ("u2", "d", 0),
    ]


def test_positives_are_distinct_pairs_with_first_time() -> None:
    events = _log(
        [
            ("u1", "a", _t(3), "click", None),
            ("u1", "a", _t(1), "purchase", None),
            ("u1", "b", _t(2), "impression", None),
        ]
    )
    out = positives(events).collect()
    assert out.rows() == [("u1", "a", _t(1))]


def test_encode_frame_matches_the_shared_hash_and_standardisation() -> None:
    schema = FeatureSchema(
        categorical=(
            CategoricalField("item_id", "item"),
            CategoricalField("device", "context", default="web"),
        ),
        numeric=(NumericField("price", "item", transform="log1p", mean=1.0, std=2.0, default=3.0),),
        n_buckets=1000,
    )
    frame = pl.DataFrame(
        {
            "item_id": ["a", "b", "a"],
            "device": ["mobile", None, "mobile"],
            "price": [0.0, None, 9.0],
        }
    )
    cat, num = encode_frame(schema, frame)
    assert cat[:, 0].tolist() == feature_buckets("item_id", ["a", "b", "a"], 1000).tolist()
    assert cat[1, 1] == feature_buckets("device", ["web"], 1000)[0]  # null takes the default
    assert cat[0, 1] == cat[2, 1]
    expected = (np.log1p([0.0, 3.0, 9.0]) - 1.0) / 2.0
    np.testing.assert_allclose(num[:, 0], expected, rtol=1e-6)
    assert cat.dtype == np.int64 and num.dtype == np.float32


def test_schema_json_round_trip() -> None:
    schema = FeatureSchema(
        categorical=(CategoricalField("user_id", "user"),),
        numeric=(NumericField("price", "item", transform="log1p", mean=0.5, std=1.5),),
        n_buckets=64,
        hash_seed=9,
    )
    assert FeatureSchema.from_json(schema.to_json()) == schema
    with pytest.raises(ValueError, match="hash"):
        FeatureSchema.from_json({**schema.to_json(), "hash_algorithm": "python-hash"})
