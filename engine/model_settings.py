"""Per-model serving knobs (batching limits, queue bounds, inference threads), as MLServer's
``ModelSettings`` and Triton's config.pbtxt keep them: each model gets its own, not the whole
server's :class:`~engine.settings.Settings`.

Where they come from:
- a ReachRank bundle: the server's defaults (the same-named ``Settings`` fields), overridden by
  ``<model>/serving.json`` (every version) and then ``<model>/<version>/serving.json`` (beside
  the manifest), each a JSON object of these fields;
- a Triton-layout model: its config.pbtxt (``max_batch_size``, ``dynamic_batching``,
  ``instance_group``, and the onnxruntime backend's ``intra_op_thread_count`` /
  ``inter_op_thread_count`` parameters), falling back to the server's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import BundleError
from engine.settings import Settings

SERVING_FILE = "serving.json"


class ModelSettings(BaseModel):
    """One model's batching, queue and thread knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batching: bool = True
    """Dynamic batching of concurrent inference calls."""
    max_batch_rows: int = Field(4096, ge=1)
    """A batch is cut once it holds this many rows (Triton: ``max_batch_size``)."""
    max_queue_delay_us: int = Field(0, ge=0)
    """...or this long after its first request arrived (``max_queue_delay_microseconds``)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes (rows) a batch is cut at when the queue holds more (Triton's
    ``preferred_batch_size``): the largest one the queued requests fill exactly."""
    max_queue_rows: int = Field(131072, ge=1)
    """Rows allowed to wait; beyond it requests are refused with RESOURCE_EXHAUSTED."""
    batch_workers: int = Field(1, ge=1)
    """Inference calls in flight at once (Triton: the instance count)."""
    ort_intra_op_threads: int | None = Field(None, ge=0)
    """onnxruntime threads per inference (None: decided at load, engine.runtime)."""
    ort_inter_op_threads: int = Field(1, ge=0)
    """onnxruntime threads across graph nodes."""
    retrieval_max_batch: int = Field(0, ge=0)
    """A retrieval model: Recommend queries searched together in one top-k pass (0: auto,
    see ``Settings.retrieval_max_batch``)."""
    retrieval_max_queue: int = Field(4096, ge=1)
    """A retrieval model: queries allowed to wait for the top-k pass; beyond it
    RESOURCE_EXHAUSTED."""

    @classmethod
    def defaults(cls, settings: Settings) -> ModelSettings:
        """The server's defaults for models that do not say."""
        return cls(**{name: getattr(settings, name) for name in _FROM_SETTINGS})


_FROM_SETTINGS = (
    "batching",
    "max_batch_rows",
    "max_queue_delay_us",
    "max_queue_rows",
    "batch_workers",
    "ort_intra_op_threads",
    "ort_inter_op_threads",
    "retrieval_max_batch",
    "retrieval_max_queue",
)


def _read_overrides(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: must be a JSON object of model settings")
    return data


def bundle_settings(version_dir: Path, settings: Settings) -> ModelSettings:
    """A bundle's settings: server defaults, then ``serving.json`` of the model, then of the
    version. BundleError names the file and the field it refuses."""
    values: dict[str, object] = dict(ModelSettings.defaults(settings))
    for path in (version_dir.parent / SERVING_FILE, version_dir / SERVING_FILE):
        if not path.is_file():
            continue
        overrides = _read_overrides(path)
        try:
            ModelSettings(**{**values, **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BundleError(f"{path}: {where}: {first['msg']}") from None
        values.update(overrides)
    return ModelSettings(**values)  # type: ignore[arg-type]


def _int_parameter(config: mc.ModelConfig, key: str, where: str) -> int | None:
    if key not in config.parameters:
        return None
    text = config.parameters[key].string_value
    if not text.strip().isdigit():
        raise BundleError(f"{where}: parameters[{key!r}]: {text!r} is not a whole number")
    return int(text)


def triton_settings(config: mc.ModelConfig, settings: Settings, where: str) -> ModelSettings:
    """A Triton model's settings from its (completed) configuration.

    Without ``dynamic_batching`` every request runs alone, up to one per instance at a time,
    as in Triton. ``default_queue_policy.max_queue_size`` counts requests in Triton; here the
    queue bound counts rows, so it becomes ``max_queue_size x max(1, max_batch_size)`` rows.
    """
    base = ModelSettings.defaults(settings)
    batching = config.HasField("dynamic_batching") and config.max_batch_size > 0
    dyn = config.dynamic_batching
    queue_size = dyn.default_queue_policy.max_queue_size
    instances = max(1, sum(g.count for g in config.instance_group))
    intra = _int_parameter(config, "intra_op_thread_count", where)
    inter = _int_parameter(config, "inter_op_thread_count", where)
    return ModelSettings(
        # The batcher also bounds concurrency (instances) and the queue when batching is off:
        # then each batch is one request (a request over max_batch_rows runs alone).
        batching=True,
        max_batch_rows=config.max_batch_size if batching else 1,
        max_queue_delay_us=dyn.max_queue_delay_microseconds if batching else 0,
        preferred_batch_sizes=tuple(sorted(set(dyn.preferred_batch_size))) if batching else (),
        max_queue_rows=queue_size * max(1, config.max_batch_size)
        if queue_size
        else base.max_queue_rows,
        batch_workers=instances,
        ort_intra_op_threads=intra if intra is not None else base.ort_intra_op_threads,
        ort_inter_op_threads=inter if inter is not None else base.ort_inter_op_threads,
    )
