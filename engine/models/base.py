"""What every served model has: identity, provider, and an ONNX session checked against its
manifest."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.batching import BatcherClosed, BatchInfo, DynamicBatcher
from engine.errors import BundleError, InvalidArgument
from engine.model_settings import ModelSettings, bundle_settings
from engine.observability import record_batch
from engine.repository import BundleRef
from engine.runtime import create_session
from engine.settings import Settings

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(int64)": "int64",
    "tensor(double)": "float64",
    "tensor(int32)": "int32",
}


class DerivedTables:
    """Tables a model derives from another loaded model, built once per pair on first use and
    owned by this model: keyed weakly by the other model object, so an entry dies with either
    model and a reloaded model (a new object) never gets its predecessor's tables, as a cache
    keyed by ``id()`` could once CPython reuses the id."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[object, dict[Hashable, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.RLock()  # a build may derive another table of the same model

    def get(self, other: object, key: Hashable, build: Callable[[], Any]) -> Any:
        tables = self._tables.get(other)
        if tables is not None and key in tables:
            return tables[key]
        with self._lock:  # concurrent first requests build it once
            tables = self._tables.setdefault(other, {})
            if key not in tables:
                tables[key] = build()
            return tables[key]


@dataclass(frozen=True)
class ModelId:
    name: str
    version: int
    kind: str
    provider: str


class ServedModel:
    """The contract every served model kind follows: built from a bundle (validated and warmed
    up in the constructor, raising BundleError if unservable), identified by ``id``, released
    by ``close``."""

    id: ModelId

    def __init__(self, ref: BundleRef, settings: Settings) -> None:
        self.ref = ref
        self.settings = settings
        # Tables derived from this model and another (row alignments, per-segment popularity).
        self.derived = DerivedTables()

    def close(self) -> None:
        """Release resources early; in-flight requests holding the model still finish."""


class OnnxModel(ServedModel):
    """An ONNX graph whose inputs and outputs must match the manifest."""

    def __init__(
        self,
        ref: BundleRef,
        settings: Settings,
        on_batch: Callable[[BatchInfo], None] | None = None,
    ) -> None:
        super().__init__(ref, settings)
        self.model_settings = self.read_model_settings()
        try:
            self.session, provider = create_session(
                ref.file("onnx"), settings, self.model_settings, cpu_only=self.cpu_only()
            )
        except Exception as exc:  # onnxruntime raises its own types for corrupt graphs
            raise BundleError(f"{ref.name}/{ref.version}: cannot load ONNX graph: {exc}") from exc
        self.id = ModelId(ref.name, ref.version, ref.kind, provider)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._check_signature()
        # Per input: the NumPy dtype and each axis's fixed size (None: dynamic), read once.
        self._input_specs = {
            name: (
                np.dtype(_DTYPES.get(node.type, "object")),
                tuple(d if isinstance(d, int) else None for d in node.shape),
            )
            for name, node in self.inputs.items()
        }
        self.batcher = self.make_batcher(on_batch or record_batch(ref.name))

    def make_batcher(self, on_batch: Callable[[BatchInfo], None]) -> DynamicBatcher | None:
        """The batching layer of this model (None: calls run directly)."""
        ms = self.model_settings
        if not ms.batching:
            return None
        return DynamicBatcher(
            self._session_run,
            max_batch_rows=ms.max_batch_rows,
            max_queue_delay_us=ms.max_queue_delay_us,
            max_queue_rows=ms.max_queue_rows,
            workers=ms.batch_workers,
            preferred_batch_sizes=ms.preferred_batch_sizes,
            name=f"{self.ref.name}/{self.ref.version}",
            on_batch=on_batch,
        )

    def read_model_settings(self) -> ModelSettings:
        """This model's batching and thread knobs (a bundle: serving.json over the defaults)."""
        return bundle_settings(self.ref.path, self.settings)

    def cpu_only(self) -> bool:
        """Whether the model must stay off a GPU whatever the server's device."""
        return False

    def _session_run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, inputs), strict=True))

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inference through the dynamic batcher (or directly when batching is off)."""
        if self.batcher is None:
            return self._session_run(inputs)
        try:
            return self.batcher.infer(inputs)
        except BatcherClosed:
            # A request that picked this version just before it was replaced finishes on it.
            return self._session_run(inputs)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def _check_signature(self) -> None:
        spec = getattr(self.ref.manifest, "onnx", None)
        where = f"{self.ref.name}/{self.ref.version}"
        if spec is None:
            raise BundleError(f"{where}: the manifest names no ONNX graph")
        want_in = {i.name: i.dtype for i in spec.inputs}
        have_in = {n: _DTYPES.get(i.type, i.type) for n, i in self.inputs.items()}
        if want_in != have_in:
            raise BundleError(f"{where}: ONNX inputs {have_in} do not match the manifest {want_in}")
        want_out = [o.name for o in spec.outputs]
        if want_out != self.outputs:
            raise BundleError(
                f"{where}: ONNX outputs {self.outputs} do not match the manifest {want_out}"
            )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw scoring: named inputs in, named outputs out (validated against the graph)."""
        specs = self._input_specs
        if inputs.keys() != specs.keys():
            unknown, missing = set(inputs) - set(specs), set(specs) - set(inputs)
            raise InvalidArgument(
                f"model {self.ref.name} takes inputs {sorted(specs)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        batch = None
        for name, array in inputs.items():
            dtype, dims = specs[name]
            if array.dtype != dtype:
                raise InvalidArgument(
                    f"input {name!r} must be {dtype.name}, got {array.dtype.name}"
                )
            shape = array.shape
            if len(shape) != len(dims):
                raise InvalidArgument(
                    f"input {name!r} must have {len(dims)} dimensions, got shape {list(shape)}"
                )
            for axis, dim in enumerate(dims):
                if dim is not None and shape[axis] != dim:
                    raise InvalidArgument(
                        f"input {name!r} axis {axis} must be {dim}, got shape {list(shape)}"
                    )
            if dtype.kind == "f" and not np.isfinite(array).all():
                raise InvalidArgument(f"input {name!r} contains NaN or infinity")
            if batch is not None and shape[0] != batch:
                raise InvalidArgument("all inputs must have the same batch size")
            batch = shape[0]
        try:
            return self.infer(inputs)
        except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
            raise InvalidArgument(f"model {self.ref.name} rejected the inputs: {exc}") from exc
