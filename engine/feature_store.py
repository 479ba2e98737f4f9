"""Where a CTR model's stored user and item features come from.

:class:`FeatureStore` is the small interface the ranking code needs: encoded features of
items (by row) and of a user, in the model's schema order. :class:`EmbeddedFeatureStore` is
the default: the bundle's own tables, hashed once at load into per-row bucket tables, so a
request only gathers rows. A networked store (Redis, a feature service) implements the same
three methods and plugs in without touching the pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import polars as pl

from kernels import gather_rows
from kernels.featurize import CategoricalField, FeatureSchema, NumericField


class FeatureStore(Protocol):
    def item_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Store rows of the items (-1 for items it doesn't know)."""
        ...

    def item_features(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoded (cat int64 [n, item cat fields], num float32 [n, item num fields]); row -1
        gets the schema defaults."""
        ...

    def user_features(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Encoded (cat [user cat fields], num [user num fields]); defaults for a stranger."""
        ...


class EmbeddedFeatureStore:
    """The bundle's items/users tables in memory, pre-encoded."""

    def __init__(self, schema: FeatureSchema, items: pl.DataFrame, users: pl.DataFrame) -> None:
        self.schema = schema
        self.item_row = {v: i for i, v in enumerate(items["item_id"].to_list())}
        self.user_row = {v: i for i, v in enumerate(users["user_id"].to_list())}
        # The last row of each table holds the defaults (row -1: unknown).
        self.item_cat = self._cat_table(schema.categorical_from("item"), items)
        self.user_cat = self._cat_table(schema.categorical_from("user"), users)
        self.item_num = self._num_table(schema.numeric_from("item"), items)
        self.user_num = self._num_table(schema.numeric_from("user"), users)

    @property
    def n_items(self) -> int:
        return len(self.item_cat) - 1

    def _cat_table(self, fields: list[CategoricalField], frame: pl.DataFrame) -> np.ndarray:
        table = np.empty((frame.height + 1, len(fields)), dtype=np.int64)
        for j, f in enumerate(fields):
            values = (
                frame[f.name].cast(pl.String).to_list()
                if f.name in frame.columns
                else [None] * frame.height
            )
            table[:-1, j] = self.schema.encode_categorical(f, values)
            table[-1, j] = self.schema.encode_categorical(f, [None])[0]
        return table

    def _num_table(self, fields: list[NumericField], frame: pl.DataFrame) -> np.ndarray:
        table = np.empty((frame.height + 1, len(fields)), dtype=np.float32)
        for j, f in enumerate(fields):
            raw = (
                frame[f.name].cast(pl.Float64).fill_null(np.nan).to_numpy()
                if f.name in frame.columns
                else np.full(frame.height, np.nan)
            )
            table[:-1, j] = self.schema.encode_numeric(f, raw)
            table[-1, j] = self.schema.encode_numeric(f, np.array([np.nan]))[0]
        return table

    def item_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        get = self.item_row.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def item_features(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.where(rows < 0, self.n_items, rows)
        return gather_rows(self.item_cat, rows), gather_rows(self.item_num, rows)

    def user_features(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        row = self.user_row.get(user_id, len(self.user_cat) - 1)
        return self.user_cat[row], self.user_num[row]
