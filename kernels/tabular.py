"""Customer features as one float32 matrix: the schema an uplift bundle ships and both the trainer
and the engine encode with, so a served plan sees exactly the columns the model learnt from.

Numeric columns: a missing or non-finite value becomes the column's fill value, then optionally
``log1p`` (for counts and money), then ``(x - mean) / std``, clipped to ±``CLIP``. Categorical
columns: one-hot over the values seen in training; an unseen or missing value is all zeros.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Standardised values beyond this are outliers the model never saw: clip rather than extrapolate.
CLIP = 8.0


@dataclass(frozen=True)
class NumericColumn:
    name: str
    mean: float
    std: float
    fill: float
    log: bool


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class TabularSchema:
    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]

    @property
    def columns(self) -> list[str]:
        """Input columns, numeric first."""
        return [c.name for c in self.numeric] + [c.name for c in self.categorical]

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(c.values) for c in self.categorical)

    def encode(self, columns: Mapping[str, Sequence[Any] | np.ndarray], rows: int) -> np.ndarray:
        """[rows, width] float32 from ``columns`` (name -> values); every schema column must be
        present (KeyError names the first missing one)."""
        out = np.zeros((rows, self.width), dtype=np.float32)
        for j, col in enumerate(self.numeric):
            x = np.asarray(
                [np.nan if v is None else v for v in columns[col.name]]
                if not isinstance(columns[col.name], np.ndarray)
                else columns[col.name],
                dtype=np.float64,
            )
            x = np.where(np.isfinite(x), x, col.fill)
            if col.log:
                x = np.sign(x) * np.log1p(np.abs(x))
            out[:, j] = np.clip((x - col.mean) / col.std, -CLIP, CLIP)
        offset = len(self.numeric)
        for col in self.categorical:
            values = np.asarray(
                ["" if v is None else str(v) for v in columns[col.name]], dtype=object
            )
            uniques, inverse = np.unique(values.astype(str), return_inverse=True)
            index = {v: i for i, v in enumerate(col.values)}
            code = np.array([index.get(u, -1) for u in uniques], dtype=np.int64)[inverse]
            hit = code >= 0
            out[np.flatnonzero(hit), offset + code[hit]] = 1.0
            offset += len(col.values)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": [vars(c) for c in self.numeric],
            "categorical": [{"name": c.name, "values": list(c.values)} for c in self.categorical],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularSchema:
        return cls(
            numeric=tuple(NumericColumn(**c) for c in d["numeric"]),
            categorical=tuple(
                CategoricalColumn(c["name"], tuple(c["values"])) for c in d["categorical"]
            ),
        )
