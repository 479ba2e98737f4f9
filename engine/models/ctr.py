"""A served CTR model: the calibrated ONNX graph, its feature schema and a feature store
(by default the tables it was trained with, see :mod:`engine.feature_store`). A request
gathers stored rows and hashes only the few context values it carries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from engine.errors import BundleError, InvalidArgument
from engine.feature_store import EmbeddedFeatureStore, FeatureStore
from engine.live_history import LiveFields, LiveHistory
from engine.models.base import OnnxModel
from engine.repository import BundleRef
from engine.settings import Settings
from kernels.bundle_manifest import CTRBundle
from kernels.featurize import FeatureSchema, NumericField, user_item_artifact


class CTRModel(OnnxModel):
    """pCTR for (user, items, context) through the bundle's feature schema."""

    def __init__(self, ref: BundleRef, settings: Settings) -> None:
        super().__init__(ref, settings)
        manifest = ref.bundle(CTRBundle)
        try:
            self.schema = FeatureSchema.from_json(manifest.features)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{ref.name}/{ref.version}: bad feature schema: {exc}") from exc
        self.default_position = settings.default_position
        try:
            user_item = {
                by: pl.read_parquet(ref.file(user_item_artifact(by)))
                for by in dict.fromkeys(str(f.by) for f in self.schema.numeric_from("user_item"))
            }
            items, users = pl.read_parquet(ref.file("items")), pl.read_parquet(ref.file("users"))
            store = EmbeddedFeatureStore(self.schema, items, users, user_item)
        except (KeyError, ValueError) as exc:
            raise BundleError(f"{ref.name}/{ref.version}: bad feature tables: {exc}") from exc
        self.store: FeatureStore = store
        self._bucket = lru_cache(maxsize=65536)(self._bucket_uncached)
        self._layout = _Layout.plan(self.schema, self._bucket, self.default_position)
        # Live histories (set by the server when it logs feedback): see engine.live_history.
        self.live: LiveHistory | None = None
        # The conversion output (training.cvr) and each thread's last scored rows' pCVR.
        self.has_pcvr = "pcvr" in self.outputs
        self._scored = threading.local()
        self._history = (
            LiveFields(self.schema, manifest.history, store, users, items, user_item)
            if manifest.history is not None
            else None
        )
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
        then the request context, then stored user/item features, then the schema default.
        Columns are filled by source, as planned at load (:class:`_Layout`), not field by
        field."""
        n = len(item_rows)
        lay = self._layout
        item_cat, item_num = self.store.item_features(item_rows)
        user_cat, user_num = self.store.user_features(user_id)
        attributes = self._attribute_values(n, context, overrides) if lay.cross_by else {}
        cat = np.empty((n, lay.n_cat), dtype=np.int64)
        num = np.empty((n, lay.n_num), dtype=np.float32)
        cat[:, lay.cat_item] = item_cat
        cat[:, lay.cat_user] = user_cat
        cat[:, lay.cat_fixed] = lay.cat_fixed_values
        num[:, lay.num_item] = item_num
        num[:, lay.num_user] = user_num
        num[:, lay.num_fixed] = lay.num_fixed_values
        if lay.num_cross.size:
            num[:, lay.num_cross] = self.store.user_item_features(user_id, item_rows, attributes)
        if context:
            for name, value in context.items():
                j = lay.cat_index.get(name)
                if j is not None:
                    cat[:, j] = self._bucket(name, str(value))
                j = lay.num_index.get(name)
                if j is not None:
                    num[:, j] = self._numeric(self.schema.numeric[j], value)
        if self.live is not None and self._history is not None and n and user_id:
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
        for by in self._layout.cross_by:
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
        cat_index, num_index = self._layout.cat_index, self._layout.num_index
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
        return self.score(cat, num)[0]

    def score(self, cat: np.ndarray, num: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated pCTR [n] and pCVR [n] (float32) from one graph run; pCVR is None when
        the bundle has no conversion model (training.cvr)."""
        if len(cat) == 0:
            empty = np.zeros(0, dtype=np.float32)
            return empty, (empty if self.has_pcvr else None)
        out = self.infer({"cat": cat, "num": num})
        if not self.has_pcvr:
            return out["pctr"].reshape(-1), None
        pcvr = out["pcvr"].reshape(-1)
        self._scored.last = (cat, num, pcvr)
        return out["pctr"].reshape(-1), pcvr

    def predict_pcvr(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray | None:
        """Calibrated pCVR [n], None without a conversion model. Rows this thread just scored
        (the same arrays) are answered from that run: pCTR and pCVR come from one graph run."""
        if not self.has_pcvr:
            return None
        last = getattr(self._scored, "last", None)
        if last is not None and last[0] is cat and last[1] is num:
            return last[2]
        return self.score(cat, num)[1]

    def warmup(self) -> None:
        """One real inference before the model takes traffic (fails the load if it fails)."""
        rows = np.array([-1], dtype=np.int64)  # the defaults row exists whatever the catalogue
        cat, num = self.features("", rows, {})
        p, pcvr = self.score(cat, num)
        for name, q in (("pCTR", p), ("pCVR", pcvr)):
            if q is not None and not np.all((q >= 0) & (q <= 1)):
                raise BundleError(
                    f"{self.ref.name}/{self.ref.version}: warm-up produced {name} outside [0, 1]"
                )


@dataclass(frozen=True)
class _Layout:
    """Where each source's values go in the (cat, num) inputs, planned once per model: the
    stored item and user columns land in their fields with one assignment each, and fields no
    table holds (defaults, the position) are constants."""

    n_cat: int
    n_num: int
    cat_item: np.ndarray  # input columns of the item table's categorical columns, in order
    cat_user: np.ndarray
    cat_fixed: np.ndarray
    cat_fixed_values: np.ndarray
    num_item: np.ndarray
    num_user: np.ndarray
    num_cross: np.ndarray  # user x item fields, in the store's order
    num_fixed: np.ndarray
    num_fixed_values: np.ndarray
    cat_index: dict[str, int]
    num_index: dict[str, int]
    cross_by: tuple[str, ...]  # item attributes keying user x item fields

    @staticmethod
    def plan(schema: FeatureSchema, bucket: Callable[[str, str], int], position: str) -> _Layout:
        def where(fields: Sequence[object], source: str) -> np.ndarray:
            return np.array(
                [j for j, f in enumerate(fields) if f.source == source],  # type: ignore[attr-defined]
                dtype=np.intp,
            )

        stored = ("item", "user")
        cat_fixed = [j for j, f in enumerate(schema.categorical) if f.source not in stored]
        cat_values = [
            bucket(f.name, position if f.name == "position" else f.default)
            for f in (schema.categorical[j] for j in cat_fixed)
        ]
        num_fixed = [
            j for j, f in enumerate(schema.numeric) if f.source not in (*stored, "user_item")
        ]
        num_values = [
            float(schema.encode_numeric(schema.numeric[j], np.array([np.nan]))[0])
            for j in num_fixed
        ]
        return _Layout(
            n_cat=len(schema.categorical),
            n_num=len(schema.numeric),
            cat_item=where(schema.categorical, "item"),
            cat_user=where(schema.categorical, "user"),
            cat_fixed=np.array(cat_fixed, dtype=np.intp),
            cat_fixed_values=np.array(cat_values, dtype=np.int64),
            num_item=where(schema.numeric, "item"),
            num_user=where(schema.numeric, "user"),
            num_cross=where(schema.numeric, "user_item"),
            num_fixed=np.array(num_fixed, dtype=np.intp),
            num_fixed_values=np.array(num_values, dtype=np.float32),
            cat_index={f.name: j for j, f in enumerate(schema.categorical)},
            num_index={f.name: j for j, f in enumerate(schema.numeric)},
            cross_by=tuple(dict.fromkeys(str(f.by) for f in schema.numeric_from("user_item"))),
        )
