"""Any ONNX model in Triton's layout: inputs and outputs of every onnxruntime datatype (strings
included), shapes and batching as its config.pbtxt says (completed from the graph when it says
nothing), one batcher per model sized by its own configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.batching import BatchInfo, DynamicBatcher
from engine.errors import BundleError, InvalidArgument
from engine.model_settings import ModelSettings, triton_settings
from engine.models.base import OnnxModel
from engine.runtime import CUDA
from engine.settings import Settings
from engine.triton_config import TritonRef, complete_config, kserve_datatypes, wants_cpu


@dataclass(frozen=True)
class TensorSpec:
    """A configured tensor: protocol datatype, per-row dims (-1: any) and, where the config
    reshapes it, the graph's per-row shape."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None
    optional: bool

    @property
    def dtype(self) -> np.dtype:
        return kserve_datatypes().DTYPES.get(self.datatype, np.dtype(object))


def _spec(tensor: mc.ModelInput | mc.ModelOutput) -> TensorSpec:
    return TensorSpec(
        name=tensor.name,
        datatype=kserve_datatypes().protocol_datatype(tensor.data_type),
        dims=tuple(tensor.dims),
        reshape=tuple(tensor.reshape.shape) if tensor.HasField("reshape") else None,
        optional=bool(getattr(tensor, "optional", False)),
    )


class _OneRequestAtATime(DynamicBatcher):
    """Triton without dynamic batching: every request runs alone, at most one per instance at
    a time, and the queue bound counts requests."""

    def _size(self, inputs: Any) -> int:
        return 1


class TritonModel(OnnxModel):
    """An ONNX graph served under its Triton model configuration."""

    ref: TritonRef

    def __init__(
        self,
        ref: TritonRef,
        settings: Settings,
        on_batch: Callable[[BatchInfo], None] | None = None,
    ) -> None:
        self.given = ref.config
        self.where = ref.where
        super().__init__(ref, settings, on_batch)

    def read_model_settings(self) -> ModelSettings:
        # Threads only: batching needs the configuration completed against the graph.
        given = self.given if self.given is not None else mc.ModelConfig()
        return triton_settings(given, self.settings, self.where)

    def cpu_only(self) -> bool:
        return self.given is not None and wants_cpu(self.given)

    def _check_signature(self) -> None:
        self.config = complete_config(
            self.given,
            self.session,
            self.ref.name,
            self.where,
            on_gpu=self.id.provider == CUDA,
        )
        self.model_settings = triton_settings(self.config, self.settings, self.where)
        self.max_batch_size = self.config.max_batch_size
        self.input_specs = {t.name: _spec(t) for t in self.config.input}
        self.output_specs = {t.name: _spec(t) for t in self.config.output}
        defaulted = {n.name for n in self.session.get_overridable_initializers()}
        self.required = [
            name for name, s in self.input_specs.items() if not s.optional and name not in defaulted
        ]

    def make_batcher(self, on_batch: Callable[[BatchInfo], None]) -> DynamicBatcher | None:
        if self.config.HasField("dynamic_batching") and self.max_batch_size > 0:
            return super().make_batcher(on_batch)
        ms = self.model_settings
        return _OneRequestAtATime(
            self._session_run,
            max_batch_rows=1,
            max_queue_delay_us=0,
            max_queue_rows=max(1, ms.max_queue_rows // max(1, self.max_batch_size)),
            workers=ms.batch_workers,
            name=f"{self.ref.name}/{self.ref.version}",
            on_batch=on_batch,
        )

    def _session_run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Only the configured outputs: a config may list a subset of the graph's.
        names = list(self.output_specs)
        return dict(zip(names, self.session.run(names, inputs), strict=True))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Configured inputs in (checked against the configuration), configured outputs out,
        both in the protocol's shapes; reshapes to and from the graph's as configured."""
        unknown = sorted(set(inputs) - set(self.input_specs))
        missing = sorted(set(self.required) - set(inputs))
        if unknown or missing:
            raise InvalidArgument(
                f"model {self.ref.name!r} takes inputs {sorted(self.input_specs)} "
                f"(required {sorted(self.required)}); missing {missing}, unknown {unknown}"
            )
        batch = None
        feed = {}
        for name, array in inputs.items():
            spec = self.input_specs[name]
            rows = self._check_shape(spec, array.shape)
            if batch is not None and rows != batch:
                raise InvalidArgument(
                    f"input {name!r} has batch size {rows}, the inputs before it {batch}"
                )
            batch = rows
            if spec.reshape is not None:
                lead = [array.shape[0]] if self.max_batch_size > 0 else []
                array = array.reshape([*lead, *spec.reshape])
            feed[name] = array
        try:
            outputs = self.infer(feed)
        except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
            raise InvalidArgument(f"model {self.ref.name} rejected the inputs: {exc}") from exc
        return {name: self._shape_output(self.output_specs[name], a) for name, a in outputs.items()}

    def _check_shape(self, spec: TensorSpec, shape: tuple[int, ...]) -> int | None:
        """The request's batch size (None when the model does not batch)."""
        batches = self.max_batch_size > 0
        want = ([-1] if batches else []) + list(spec.dims)
        fits = len(shape) == len(want) and all(
            w in (-1, s) for w, s in zip(want, shape, strict=True)
        )
        if not fits:
            shown = ["batch" if batches and i == 0 else d for i, d in enumerate(want)]
            raise InvalidArgument(
                f"input {spec.name!r} of model {self.ref.name!r} must have shape {shown} "
                f"(-1: any size), got {list(shape)}"
            )
        if not batches:
            return None
        if not 0 < shape[0] <= self.max_batch_size:
            raise InvalidArgument(
                f"input {spec.name!r}: batch size {shape[0]} is outside 1..max_batch_size "
                f"({self.max_batch_size}) of model {self.ref.name!r}"
            )
        return shape[0]

    def _shape_output(self, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
        if spec.reshape is None:
            return array
        lead = [array.shape[0]] if self.max_batch_size > 0 else []
        try:
            return array.reshape([*lead, *spec.dims])
        except ValueError:
            raise BundleError(
                f"{self.where}: output {spec.name!r} of shape {list(array.shape)} does not "
                f"reshape to dims {list(spec.dims)}"
            ) from None
