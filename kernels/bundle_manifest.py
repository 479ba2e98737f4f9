"""The bundle contract: what the trainer writes into ``<repo>/<model>/<version>/manifest.json``
and the engine reads, declared once, typed, per kind.

The trainer builds one of these models and :func:`training.bundle.write_bundle` stamps name,
version and time and writes it; the engine parses the file with :func:`parse_manifest` and reads
attributes, never string keys. Both sides import this module (it lives in ``kernels`` beside
the feature schema for the same reason: engine and training never import each other), so a
field renamed on one side fails the other's tests instead of drifting silently.

Sections the engine reads are strict (an unknown key is a bundle error naming it). A bundle
may carry extra top-level keys (reports, tuning notes a newer trainer adds): they are kept
and ignored. ``format_version`` gates incompatible changes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
KINDS = ("ctr", "retrieval", "profiles", "uplift")
ONNX_KINDS = ("ctr", "retrieval", "uplift")
"""Kinds whose bundle carries an ONNX graph (``onnx``), also served over KServe v2."""

# Artefact keys and the files the trainer writes them to (the engine reads by key).
CTR_FILES = {"items": "items.parquet", "users": "users.parquet", "metrics": "metrics.json"}
RETRIEVAL_FILES = {
    "user_embeddings": "user_embeddings.npy",
    "item_embeddings": "item_embeddings.npy",
    "consumed_indptr": "consumed_indptr.npy",
    "consumed_indices": "consumed_indices.npy",
    "popularity": "popularity.npy",
    "users": "users.parquet",
    "items": "items.parquet",
    "metrics": "metrics.json",
}
SEQUENCE_FILES = {
    "user_tower": "user_tower.onnx",
    "recent_indptr": "recent_indptr.npy",
    "recent_indices": "recent_indices.npy",
}
PROFILES_FILES = {"profiles": "profiles.parquet"}
UPLIFT_FILES = {"report": "report.md", "report_json": "report.json", "qini": "qini.png"}


class ManifestError(ValueError):
    """A manifest that does not follow the contract; the message names the field."""


class _Section(BaseModel):
    """A part of the manifest the engine reads: unknown keys are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Tensor(_Section):
    name: str
    dtype: str
    shape: list[int] | None = None
    """-1 for a free dimension; None: not stated (checked against the graph only by name)."""


class Graph(_Section):
    """An ONNX graph's file and the inputs and outputs the engine feeds and reads."""

    file: str = "model.onnx"
    inputs: list[Tensor]
    outputs: list[Tensor]

    def output(self, name: str) -> Tensor | None:
        return next((t for t in self.outputs if t.name == name), None)


class TowerIO(_Section):
    inputs: list[Tensor]
    outputs: list[Tensor]


class History(_Section):
    """The CTR model's history features: which events, keyed by which item attributes, and the
    smoothing of their click rates; ``as_of_ms`` is the last event the shipped tables count."""

    events: list[str]
    by: list[str] = []
    prior: float
    strength: float
    rule: str = ""
    as_of_ms: int | None = None
    """None: no cut recorded, so no live event is newer than the shipped tables."""


class Calibration(BaseModel):
    """How the served scores were calibrated (``applied: in_graph``: the ONNX output already is
    calibrated); the method's own parameters ride along."""

    model_config = ConfigDict(extra="allow")
    method: str
    applied: str = "in_graph"


class Sequence(_Section):
    """The sequence model's user tower: its input length and padding row, the events it reads
    and the time after which a logged event is newer than the shipped recent items."""

    max_len: int = Field(gt=0)
    pad: int = Field(ge=0)
    as_of_ms: int
    events: list[str]
    user_tower: TowerIO


class Ivf(_Section):
    n_lists: int = Field(gt=0)
    metric: Literal["ip"] = "ip"
    seed: int = 0


class BundleManifest(BaseModel):
    """What every bundle carries. ``name``, ``version`` and ``created_at`` are stamped by the
    writer (the trainer leaves them at their defaults)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    format_version: Literal[1] = FORMAT_VERSION
    name: str = ""
    version: int = Field(0, ge=0)
    created_at: str = ""
    model_type: str | None = None
    artifacts: dict[str, str]
    metrics: dict[str, Any] = {}
    valid_metrics: dict[str, Any] = {}
    split: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    parity_max_abs_error: float | None = None

    def stamped(self, name: str, version: int) -> BundleManifest:
        """This manifest as version ``version`` of ``name``, created now (checked again)."""
        created = datetime.now(UTC).isoformat(timespec="seconds")
        data = {**self.model_dump(), "name": name, "version": version, "created_at": created}
        return type(self).model_validate(data)


class CTRBundle(BundleManifest):
    kind: Literal["ctr"] = "ctr"
    onnx: Graph
    features: dict[str, Any]
    """:class:`kernels.featurize.FeatureSchema` as JSON (``FeatureSchema.from_json``)."""
    history: History | None = None
    calibration: Calibration | None = None
    cvr: dict[str, Any] | None = None
    """The conversion model behind the graph's ``pcvr`` output (absent: pCTR only)."""


class RetrievalBundle(BundleManifest):
    kind: Literal["retrieval"] = "retrieval"
    onnx: Graph
    embedding_dim: int = Field(gt=0)
    latent_dim: int | None = None
    """Item-item similarity uses embedding columns [0, latent_dim) (MF's last is its bias)."""
    metric: Literal["ip"] = "ip"
    cold_start: dict[str, Any] | None = None
    sequence: Sequence | None = None
    ivf: Ivf | None = None


class ProfilesBundle(BundleManifest):
    kind: Literal["profiles"] = "profiles"
    as_of: str
    rfm_segment_rules: dict[str, Any] = {}
    kmeans: dict[str, Any] | None = None
    summary: dict[str, Any] = {}


class UpliftBundle(BundleManifest):
    kind: Literal["uplift"] = "uplift"
    onnx: Graph
    customer_schema: dict[str, Any] = Field(alias="schema")
    """:class:`kernels.tabular.TabularSchema` as a dict (``TabularSchema.from_dict``)."""
    treatments: list[str] = Field(min_length=1)
    value_per_conversion: float | None = None
    mlp: dict[str, Any] | None = None
    """The PyTorch learners' network size (a record of training, not read by the engine)."""
    trees: dict[str, Any] | None = None
    """The gradient-boosted learner's settings (a record of training)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)


Manifest = Annotated[
    CTRBundle | RetrievalBundle | ProfilesBundle | UpliftBundle, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[Manifest] = TypeAdapter(Manifest)


def parse_manifest(data: object) -> Manifest:
    """The typed manifest of a parsed ``manifest.json``; :class:`ManifestError` names every
    field that breaks the contract."""
    if isinstance(data, dict) and data.get("kind") not in KINDS:
        raise ManifestError(f"unknown kind {data.get('kind')!r} (expected one of {KINDS})")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        faults = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'manifest'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ManifestError(f"manifest breaks the bundle contract: {faults}") from None


def manifest_json(manifest: BundleManifest) -> str:
    """The file's text: every field, by alias (``schema``); optional sections that are None
    are left out, so older readers see what they always saw."""
    data = manifest.model_dump(by_alias=True)
    top = {k: v for k, v in data.items() if v is not None or k not in _OPTIONAL_SECTIONS}
    return json.dumps(top, indent=2, default=jsonable)


_OPTIONAL_SECTIONS = frozenset(
    [
        "history",
        "calibration",
        "cvr",
        "sequence",
        "ivf",
        "cold_start",
        "latent_dim",
        "split",
        "train",
        "parity_max_abs_error",
        "model_type",
        "value_per_conversion",
        "kmeans",
        "mlp",
        "trees",
    ]
)


def jsonable(value: Any) -> Any:
    """NumPy scalars (metrics) and paths (training configs) as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
