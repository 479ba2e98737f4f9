"""The CTR feature schema and its encoding, shared bit-for-bit by the trainer and the engine.

A schema lists categorical fields (hashed into one shared table of ``n_buckets`` rows with
:func:`kernels.feature_buckets`, key ``"<field>=<value>"``) and numeric fields (transformed,
then standardised with the training mean and standard deviation). The trainer saves it in
the CTR bundle's manifest; the engine rebuilds it from there, so serving computes exactly
the features the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from kernels.hashing import feature_buckets

Source = Literal["user", "item", "context"]
Transform = Literal["identity", "log1p"]
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
        object.__setattr__(
            self, "field_names", tuple(f.name for f in (*self.categorical, *self.numeric))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "categorical": [asdict(f) for f in self.categorical],
            "numeric": [asdict(f) for f in self.numeric],
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
        return ((x - spec.mean) / spec.std).astype(np.float32)
