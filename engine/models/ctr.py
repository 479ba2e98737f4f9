"""A served CTR model: the calibrated ONNX graph, its feature schema and a feature store
(by default the tables it was trained with, see :mod:`engine.feature_store`). A request
gathers stored rows and hashes only the few context values it carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl

from engine.errors import BundleError, InvalidArgument
from engine.feature_store import EmbeddedFeatureStore, FeatureStore
from engine.live_history import LiveHistory
from engine.models.base import OnnxModel
from engine.repository import BundleRef
from engine.settings import Settings
from kernels.featurize import (
    HISTORY_STATS,
    FeatureSchema,
    NumericField,
    history_field_name,
    history_values,
    user_item_artifact,
)


class CTRModel(OnnxModel):
    """pCTR for (user, items, context) through the bundle's feature schema."""

    def __init__(self, ref: BundleRef, settings: Settings) -> None:
        super().__init__(ref, settings)
        try:
            self.schema = FeatureSchema.from_json(ref.manifest["features"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{ref.name}/{ref.version}: bad feature schema: {exc}") from exc
        self.default_position = settings.default_position
        try:
            user_item = {
                by: pl.read_parquet(ref.file(user_item_artifact(by)))
                for by in dict.fromkeys(str(f.by) for f in self.schema.numeric_from("user_item"))
            }
            self.store: FeatureStore = EmbeddedFeatureStore(
                self.schema,
                pl.read_parquet(ref.file("items")),
                pl.read_parquet(ref.file("users")),
                user_item,
            )
        except (KeyError, ValueError) as exc:
            raise BundleError(f"{ref.name}/{ref.version}: bad feature tables: {exc}") from exc
        self._bucket = lru_cache(maxsize=65536)(self._bucket_uncached)
        # Live histories (set by the server when it logs feedback): see engine.live_history.
        self.live: LiveHistory | None = None
        self._history = _LiveFields.of(ref, self.schema) if "history" in ref.manifest else None
        self.warmup()

    @property
    def history_cut_ms(self) -> int | None:
        """When the shipped user histories end (ms since the epoch); None without histories."""
        return self._history.as_of_ms if self._history is not None else None

    def _bucket_uncached(self, field: str, value: str) -> int:
        spec = next(f for f in self.schema.categorical if f.name == field)
        return int(self.schema.encode_categorical(spec, [value])[0])

    def item_rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Rows of the item table (-1 for items the model has never seen)."""
        return self.store.item_rows(item_ids)

    def features(
        self,
        user_id: str,
        item_rows: np.ndarray,
        context: Mapping[str, str],
        overrides: Sequence[Mapping[str, str]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(cat, num) model inputs for one user and n items. Precedence: per-item overrides,
        then the request context, then stored user/item features, then the schema default."""
        n = len(item_rows)
        s = self.schema
        item_cat, item_num = self.store.item_features(item_rows)
        user_cat, user_num = self.store.user_features(user_id)
        attributes = self._attribute_values(n, context, overrides)
        user_item_num = self.store.user_item_features(user_id, item_rows, attributes)
        cat = np.empty((n, len(s.categorical)), dtype=np.int64)
        num = np.empty((n, len(s.numeric)), dtype=np.float32)
        ii = iu = 0
        for j, f in enumerate(s.categorical):
            if f.name in context:
                cat[:, j] = self._bucket(f.name, str(context[f.name]))
            elif f.source == "item":
                cat[:, j] = item_cat[:, ii]
            elif f.source == "user":
                cat[:, j] = user_cat[iu]
            elif f.name == "position":
                cat[:, j] = self._bucket(f.name, self.default_position)
            else:
                cat[:, j] = self._bucket(f.name, f.default)
            ii += f.source == "item"
            iu += f.source == "user"
        ii = iu = ix = 0
        for j, f in enumerate(s.numeric):
            if f.name in context:
                num[:, j] = self._numeric(f, context[f.name])
            elif f.source == "item":
                num[:, j] = item_num[:, ii]
            elif f.source == "user":
                num[:, j] = user_num[iu]
            elif f.source == "user_item":
                num[:, j] = user_item_num[:, ix]
            else:
                num[:, j] = s.encode_numeric(f, np.array([np.nan]))[0]
            ii += f.source == "item"
            iu += f.source == "user"
            ix += f.source == "user_item"
        if self.live is not None and self._history is not None and n:
            fresh = self.live.since(user_id, self._history.as_of_ms)
            if fresh:
                self._history.apply(num, user_id, item_rows, fresh, attributes)
        if overrides:
            self._apply_overrides(cat, num, overrides)
        return cat, num

    def _attribute_values(
        self,
        n: int,
        context: Mapping[str, str],
        overrides: Sequence[Mapping[str, str]] | None,
    ) -> dict[str, list[str | None]]:
        """Per row, the item attributes keying user x item fields that the request sets (the
        same precedence as the fields: per-item override, then context); None: stored."""
        out: dict[str, list[str | None]] = {}
        for by in dict.fromkeys(str(f.by) for f in self.schema.numeric_from("user_item")):
            default = str(context[by]) if by in context else None
            values = [default] * n
            for row, given in enumerate(overrides or ()):
                if by in given:
                    values[row] = str(given[by])
            if default is not None or overrides:
                out[by] = values
        return out

    def _apply_overrides(
        self, cat: np.ndarray, num: np.ndarray, overrides: Sequence[Mapping[str, str]]
    ) -> None:
        s = self.schema
        cat_index = {f.name: j for j, f in enumerate(s.categorical)}
        num_index = {f.name: j for j, f in enumerate(s.numeric)}
        for row, values in enumerate(overrides):
            for name, value in values.items():
                if name in cat_index:
                    cat[row, cat_index[name]] = self._bucket(name, str(value))
                elif name in num_index:
                    num[row, num_index[name]] = self._numeric(s.numeric[num_index[name]], value)

    def _numeric(self, spec: NumericField, value: str) -> float:
        try:
            x = float(value)
        except ValueError:
            raise InvalidArgument(
                f"feature {spec.name!r} must be a number, got {value!r}"
            ) from None
        if not np.isfinite(x):
            raise InvalidArgument(f"feature {spec.name!r} must be finite, got {value!r}")
        return float(self.schema.encode_numeric(spec, np.array([x]))[0])

    def predict(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """Calibrated pCTR [n] (float32)."""
        if len(cat) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.infer({"cat": cat, "num": num})["pctr"].reshape(-1)

    def warmup(self) -> None:
        """One real inference before the model takes traffic (fails the load if it fails)."""
        rows = np.array([-1], dtype=np.int64)  # the defaults row exists whatever the catalogue
        cat, num = self.features("", rows, {})
        p = self.predict(cat, num)
        if not np.all((p >= 0) & (p <= 1)):
            raise BundleError(
                f"{self.ref.name}/{self.ref.version}: warm-up produced pCTR outside [0, 1]"
            )


class _LiveFields:
    """Where a bundle's history features sit in ``num``, the snapshot counts behind them, and
    how to re-derive them from counts (`kernels.featurize.history_values` + the schema)."""

    def __init__(
        self,
        schema: FeatureSchema,
        spec: Mapping[str, Any],
        users: pl.DataFrame,
        items: pl.DataFrame,
        user_item: Mapping[str, pl.DataFrame],
    ) -> None:
        self.schema = schema
        self.as_of_ms = int(spec.get("as_of_ms", 2**62))  # no cut recorded: nothing is newer
        self.prior, self.strength = float(spec["prior"]), float(spec["strength"])
        self.by: list[str] = list(spec.get("by", []))
        index = {f.name: j for j, f in enumerate(schema.numeric)}
        # prefix -> [(column in num, field, statistic)]
        self.fields: dict[str, list[tuple[int, NumericField, str]]] = {}
        for prefix in ["user", *(f"user_{b}" for b in self.by)]:
            for stat in HISTORY_STATS:
                name = history_field_name(prefix, stat)
                if name in index:
                    self.fields.setdefault(prefix, []).append(
                        (index[name], schema.numeric[index[name]], stat)
                    )
        self.user_counts = _counts(users, ["user_id"], "user")
        self.pair_counts = {b: _counts(user_item[b], ["user_id", b], f"user_{b}") for b in self.by}
        # Each item's attribute values: of the rows the store serves, and of any logged item id.
        values = {b: _strings(items, b) for b in self.by}
        ids = items["item_id"].cast(pl.String).to_list()
        self.item_values = {b: dict(zip(ids, values[b], strict=True)) for b in self.by}
        # Per store row (and a last None for row -1, an unknown item): the attribute value.
        self.row_values = {b: np.array([*values[b], None], dtype=object) for b in self.by}

    @classmethod
    def of(cls, ref: BundleRef, schema: FeatureSchema) -> _LiveFields:
        spec = ref.manifest["history"]
        user_item = {
            b: pl.read_parquet(ref.file(user_item_artifact(b))) for b in spec.get("by", [])
        }
        return cls(
            schema,
            spec,
            pl.read_parquet(ref.file("users")),
            pl.read_parquet(ref.file("items")),
            user_item,
        )

    def _encode(
        self, prefix: str, imp: np.ndarray, clk: np.ndarray
    ) -> list[tuple[int, np.ndarray]]:
        values = history_values(imp, clk, self.prior, self.strength)
        return [
            (j, self.schema.encode_numeric(f, np.asarray(values[stat], dtype=np.float64)))
            for j, f, stat in self.fields.get(prefix, [])
        ]

    def apply(
        self,
        num: np.ndarray,
        user_id: str,
        item_rows: np.ndarray,
        fresh: list[tuple[str, bool]],
        attributes: Mapping[str, Sequence[str | None]],
    ) -> None:
        """Overwrite the history columns of ``num`` with snapshot + fresh counts."""
        clicks = sum(c for _, c in fresh)
        imp0, clk0 = self.user_counts.get((user_id,), (0.0, 0.0))
        imp, clk = np.array([imp0 + len(fresh) - clicks]), np.array([clk0 + clicks])
        for j, encoded in self._encode("user", imp, clk):
            num[:, j] = encoded[0]
        for b in self.by:
            delta: dict[str, list[int]] = {}
            for item, click in fresh:
                value = self.item_values[b].get(item)
                if value is not None:
                    d = delta.setdefault(value, [0, 0])
                    d[1 if click else 0] += 1
            if not delta:
                continue
            values = self.row_values[b][np.where(item_rows < 0, -1, item_rows)]
            given = attributes.get(b)
            if given:
                override = np.array(given, dtype=object)
                values = np.where(override != None, override, values)  # noqa: E711 - elementwise
            # One derivation for every value with new events, then scattered to its rows.
            names = list(delta)
            pairs = self.pair_counts[b]
            base = [pairs.get((user_id, v), (0.0, 0.0)) for v in names]
            imp = np.array([c[0] + delta[v][0] for c, v in zip(base, names, strict=True)])
            clk = np.array([c[1] + delta[v][1] for c, v in zip(base, names, strict=True)])
            code = {v: k for k, v in enumerate(names)}
            which = np.fromiter((code.get(v, -1) for v in values), np.int64, len(values))
            rows = np.flatnonzero(which >= 0)
            for j, column in self._encode(f"user_{b}", imp, clk):
                num[rows, j] = column[which[rows]]


def _counts(frame: pl.DataFrame, keys: list[str], prefix: str) -> dict[tuple, tuple[float, float]]:
    """(key values) -> (impressions, clicks) of a shipped history table."""
    imp, clk = history_field_name(prefix, "impressions"), history_field_name(prefix, "clicks")
    if imp not in frame.columns or clk not in frame.columns:
        return {}
    cols = [frame[k].cast(pl.String).to_list() for k in keys]
    counts = zip(
        frame[imp].cast(pl.Float64).fill_null(0).to_list(),
        frame[clk].cast(pl.Float64).fill_null(0).to_list(),
        strict=True,
    )
    return dict(zip(zip(*cols, strict=True), counts, strict=True))


def _strings(frame: pl.DataFrame, column: str) -> list[str | None]:
    if column not in frame.columns:
        return [None] * frame.height
    return frame[column].cast(pl.String).to_list()
