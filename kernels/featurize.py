"""The CTR feature schema and its encoding, shared bit-for-bit by the trainer and the engine.

A schema lists categorical fields (hashed into one shared table of ``n_buckets`` rows with
:func:`kernels.feature_buckets`, key ``"<field>=<value>"``) and numeric fields (transformed,
then standardised with the training mean and standard deviation). The trainer saves it in
the CTR bundle's manifest; the engine rebuilds it from there, so serving computes exactly
the features the model was trained on.

History features (a user's past impressions, clicks and smoothed CTR, overall and per value
of an item attribute such as the category) are numeric fields whose raw values come from
:func:`history_values`, the one definition the trainer applies to point-in-time counts and
to the snapshot it ships in the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from kernels.hashing import feature_buckets

# "user_item": keyed by the user and the value of one item attribute (``NumericField.by``).
Source = Literal["user", "item", "context", "user_item"]
Transform = Literal["identity", "log1p", "logit"]
# Rates are clipped this far inside (0, 1) before the logit.
LOGIT_EPS = 1e-6
from kernels.hashing import MISSING  # noqa: E402  (re-exported: one definition)


@dataclass(frozen=True)
class CategoricalField:
    """A categorical feature: its name, where its value comes from, and the value used when
    that source has none."""

    name: str
    source: Source
    default: str = MISSING


@dataclass(frozen=True)
class NumericField:
    """A numeric feature: ``(transform(x) - mean) / std``; missing values take ``default``
    (a raw value, before the transform)."""

    name: str
    source: Source
    transform: Transform = "identity"
    mean: float = 0.0
    std: float = 1.0
    default: float = 0.0
    # For source "user_item": the item attribute that, with the user id, keys the value.
    by: str | None = None


@dataclass(frozen=True)
class FeatureSchema:
    """Everything needed to turn raw feature values into the CTR model's two inputs:
    ``cat`` int64 [batch, len(categorical)] and ``num`` float32 [batch, len(numeric)]."""

    categorical: tuple[CategoricalField, ...]
    numeric: tuple[NumericField, ...]
    n_buckets: int = 1 << 17
    hash_seed: int = 0
    hash_algorithm: str = "murmur3_x86_32"
    field_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        for c in self.categorical:
            if c.source == "user_item":
                raise ValueError(f"categorical field {c.name!r}: 'user_item' is numeric-only")
        for n in self.numeric:
            if (n.source == "user_item") != (n.by is not None):
                raise ValueError(f"numeric field {n.name!r}: 'by' goes with source 'user_item'")
        object.__setattr__(
            self, "field_names", tuple(f.name for f in (*self.categorical, *self.numeric))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "categorical": [asdict(f) for f in self.categorical],
            # ``by`` only where set: manifests of schemas without history stay as they were.
            "numeric": [
                {k: v for k, v in asdict(f).items() if k != "by" or v is not None}
                for f in self.numeric
            ],
            "n_buckets": self.n_buckets,
            "hash_seed": self.hash_seed,
            "hash_algorithm": self.hash_algorithm,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSchema:
        if data.get("hash_algorithm", "murmur3_x86_32") != "murmur3_x86_32":
            raise ValueError(f"unsupported hash algorithm {data['hash_algorithm']!r}")
        return cls(
            categorical=tuple(CategoricalField(**f) for f in data["categorical"]),
            numeric=tuple(NumericField(**f) for f in data["numeric"]),
            n_buckets=int(data["n_buckets"]),
            hash_seed=int(data["hash_seed"]),
        )

    def categorical_from(self, source: Source) -> list[CategoricalField]:
        return [f for f in self.categorical if f.source == source]

    def numeric_from(self, source: Source) -> list[NumericField]:
        return [f for f in self.numeric if f.source == source]

    def encode_categorical(
        self, spec: CategoricalField, values: Sequence[str | None] | np.ndarray
    ) -> np.ndarray:
        """Bucket ids (int64) of raw values of one categorical field; None → the default."""
        return feature_buckets(
            spec.name,
            [spec.default if v is None else v for v in values],
            self.n_buckets,
            self.hash_seed,
        )

    @staticmethod
    def encode_numeric(spec: NumericField, values: np.ndarray) -> np.ndarray:
        """Standardised float32 values of one numeric field; NaN → the default."""
        x = np.asarray(values, dtype=np.float64)
        x = np.where(np.isnan(x), spec.default, x)
        if spec.transform == "log1p":
            x = np.log1p(np.maximum(x, 0.0))
        elif spec.transform == "logit":
            # Rates on the logit scale, where a linear model adds evidence.
            x = np.clip(x, LOGIT_EPS, 1.0 - LOGIT_EPS)
            x = np.log(x) - np.log1p(-x)
        return ((x - spec.mean) / spec.std).astype(np.float32)


# The statistics of a history: what ``history_values`` returns, in field order.
HISTORY_STATS: tuple[str, ...] = ("impressions", "clicks", "ctr")


def user_item_artifact(by: str) -> str:
    """The bundle's artefact key of the table of histories keyed by (user, item ``by``)."""
    return f"user_item:{by}"


def history_field_name(prefix: str, stat: str) -> str:
    """``user_ctr``, ``user_category_clicks``, ...: the column and field name of a statistic."""
    return f"{prefix}_{stat}"


def history_values(impressions: Any, clicks: Any, prior: float, strength: float) -> dict[str, Any]:
    """Raw history statistics from counts of past impressions and clicks: the counts and the
    CTR smoothed towards ``prior`` by ``strength`` pseudo-impressions (a user with no history
    gets the prior, one with a long history their own rate). Plain float arithmetic, so it
    gives the same numbers on NumPy float64 arrays and on Polars Float64 expressions."""
    return {
        "impressions": impressions,
        "clicks": clicks,
        "ctr": (clicks + prior * strength) / (impressions + strength),
    }
