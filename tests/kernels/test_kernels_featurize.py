"""The shared feature schema: history statistics, the logit transform and user x item fields,
against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.featurize import (
    HISTORY_STATS,
    LOGIT_EPS,
    CategoricalField,
    FeatureSchema,
    NumericField,
    history_field_name,
    history_values,
    user_item_artifact,
)


def test_history_values_smooth_the_ctr_towards_the_prior() -> None:
    out = history_values(np.array([0.0, 10.0, 100.0]), np.array([0.0, 5.0, 0.0]), 0.2, 10.0)
    assert list(out) == list(HISTORY_STATS)
    assert out["impressions"].tolist() == [0.0, 10.0, 100.0]
    assert out["clicks"].tolist() == [0.0, 5.0, 0.0]
    # (clicks + 0.2 * 10) / (impressions + 10)
    assert out["ctr"].tolist() == pytest.approx([0.2, 7.0 / 20.0, 2.0 / 110.0])


def test_history_values_give_the_same_floats_on_scalars_and_arrays() -> None:
    # The trainer applies the formula to Polars expressions, the tests to NumPy: plain IEEE
    # arithmetic in the same order gives the same bits.
    many = history_values(np.array([7.0]), np.array([3.0]), 0.137, 20.0)["ctr"][0]
    one = history_values(7.0, 3.0, 0.137, 20.0)["ctr"]
    assert many == one == (3.0 + 0.137 * 20.0) / (7.0 + 20.0)


def test_history_names() -> None:
    assert history_field_name("user_category", "ctr") == "user_category_ctr"
    assert user_item_artifact("category") == "user_item:category"


def test_logit_transform_clips_then_standardises() -> None:
    spec = NumericField("user_ctr", "user", transform="logit", mean=0.5, std=2.0, default=0.25)
    got = FeatureSchema.encode_numeric(spec, np.array([0.5, 0.25, np.nan, 0.0, 1.0]))
    lo, hi = math.log(LOGIT_EPS / (1 - LOGIT_EPS)), math.log((1 - LOGIT_EPS) / LOGIT_EPS)
    want = [
        (0.0 - 0.5) / 2.0,
        (math.log(1 / 3) - 0.5) / 2.0,
        (math.log(1 / 3) - 0.5) / 2.0,  # missing: the default, a raw value
        (lo - 0.5) / 2.0,
        (hi - 0.5) / 2.0,
    ]
    assert got.dtype == np.float32
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_user_item_fields_round_trip_through_json() -> None:
    schema = FeatureSchema(
        categorical=(CategoricalField("user_id", "user"),),
        numeric=(
            NumericField("price", "item", transform="log1p"),
            NumericField("user_category_ctr", "user_item", transform="logit", by="category"),
        ),
        n_buckets=64,
    )
    data = schema.to_json()
    # Fields without ``by`` are written as before: old engines read new manifests' other fields.
    assert "by" not in data["numeric"][0]
    assert data["numeric"][1]["by"] == "category"
    assert FeatureSchema.from_json(data) == schema
    assert [f.name for f in schema.numeric_from("user_item")] == ["user_category_ctr"]


@pytest.mark.parametrize(
    ("categorical", "numeric"),
    [
        ((CategoricalField("x", "user_item"),), ()),
        ((), (NumericField("x", "user_item"),)),
        ((), (NumericField("x", "user", by="category"),)),
    ],
)
def test_user_item_fields_are_numeric_and_keyed(categorical, numeric) -> None:
    with pytest.raises(ValueError, match=r"user_item|'by'"):
        FeatureSchema(categorical=categorical, numeric=numeric)
