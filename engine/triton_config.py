"""Triton's model repository layout: ``<repo>/<model>/config.pbtxt`` (the protobuf text form of
``inference.ModelConfig``, parsed against the vendored ``model_config.proto``) and
``<repo>/<model>/<version>/model.onnx``. Reads the configuration, completes it from the ONNX
graph as Triton's auto-complete does (for a model with no config.pbtxt, or one that leaves
inputs, outputs or batching out), checks it against the graph, and picks the versions its
``version_policy`` serves. Every refusal is a BundleError naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import onnxruntime as ort
from google.protobuf import text_format
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import BundleError
from engine.repository import BundleRef

CONFIG = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
KIND = "onnx"
"""The kind ReachRank's registry gives a Triton-layout model (engine.models.triton)."""
# Triton's --backend-config=default-max-batch-size: what auto-complete gives a model that can
# batch when the configuration says nothing of batching.
DEFAULT_MAX_BATCH_SIZE = 4


def kserve_datatypes() -> ModuleType:
    """engine.kserve.datatypes, imported on first use: the engine.kserve package imports its
    servicer, and so the registry, which imports this module."""
    from engine.kserve import datatypes

    return datatypes


def config_path(model_dir: Path) -> Path:
    return model_dir / CONFIG


def parse_config(path: Path) -> mc.ModelConfig:
    """The ModelConfig in ``path``; BundleError with protobuf's line and column when it does not
    parse (unknown field, wrong type, bad syntax)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BundleError(f"{path}: unreadable: {exc}") from exc
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise BundleError(f"{path}: not a valid inference.ModelConfig: {exc}") from None


def read_config(model_dir: Path) -> mc.ModelConfig | None:
    """The model's config.pbtxt, or None when it has none (auto-complete serves it)."""
    path = config_path(model_dir)
    return parse_config(path) if path.is_file() else None


def model_filename(config: mc.ModelConfig | None) -> str:
    return (config.default_model_filename if config is not None else "") or DEFAULT_MODEL_FILENAME


def safe_model_filename(model_dir: Path) -> str:
    """The model file name versions are looked for under, never raising (a config that does
    not parse is reported when the model loads)."""
    try:
        return model_filename(read_config(model_dir))
    except BundleError:
        return DEFAULT_MODEL_FILENAME


def select_versions(
    policy: mc.ModelVersionPolicy, available: Sequence[int], where: str
) -> list[int]:
    """The versions ``policy`` serves among ``available`` (ascending); default: the latest."""
    available = sorted(available)
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = sorted(set(policy.specific.versions))
        missing = [v for v in wanted if v not in available]
        if missing or not wanted:
            raise BundleError(
                f"{where}: version_policy.specific asks for versions {wanted}; "
                f"missing on disk: {missing or wanted} (has {available})"
            )
        return wanted
    n = policy.latest.num_versions if choice == "latest" else 1
    return available[-max(1, n) :]


@dataclass(frozen=True)
class TritonRef(BundleRef):
    """A version of a Triton-layout model: its directory, the model file and the configuration
    as written (None: no config.pbtxt)."""

    model_file: Path = field(default=Path())
    config: mc.ModelConfig | None = None
    config_file: Path = field(default=Path())
    overridden: bool = False
    """``config`` came with a load request, replacing config.pbtxt."""

    @property
    def where(self) -> str:
        """Where the configuration comes from, for error messages."""
        if self.overridden:
            return f"{self.name}: the config sent with the load request"
        if self.config is not None:
            return str(self.config_file)
        return f"{self.model_file} (configuration completed from the graph)"

    @property
    def kind(self) -> str:
        return KIND

    def file(self, key: str) -> Path:
        if key != "onnx":
            raise BundleError(f"{self.name}/{self.version}: Triton models have no {key!r} file")
        return self.model_file


def read_triton(
    model_dir: Path, name: str, version: int | None, available: Sequence[int]
) -> TritonRef:
    """The given version (default: the latest the version policy serves) of a Triton model."""
    config = read_config(model_dir)
    where = str(config_path(model_dir))
    if version is None:
        chosen = select_versions(
            config.version_policy if config is not None else mc.ModelVersionPolicy(),
            available,
            where,
        )
        version = chosen[-1]
    elif version not in available:
        raise BundleError(f"model {name!r} has no version {version} (has {list(available)})")
    path = model_dir / str(version)
    model_file = (path / model_filename(config)).resolve()
    if path.resolve() not in model_file.parents:
        raise BundleError(
            f"{where}: default_model_filename {model_filename(config)!r} leads out of {path}"
        )
    if not model_file.is_file():
        raise BundleError(f"{name}/{version}: missing {model_filename(config)}")
    return TritonRef(
        name=name,
        version=version,
        path=path,
        manifest=None,
        model_file=model_file,
        config=config,
        config_file=config_path(model_dir),
    )


def _graph_shape(node: ort.NodeArg) -> list[int]:
    return [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape]


def _batchable(nodes: Sequence[ort.NodeArg]) -> bool:
    return all(_graph_shape(n)[:1] == [-1] for n in nodes)


class _Checker:
    """Checks one configuration against one graph, naming the file and field of each fault."""

    def __init__(self, where: str, session: ort.InferenceSession) -> None:
        self.where = where
        self.inputs = {n.name: n for n in session.get_inputs()}
        # Inputs backed by an initializer may be left out of a request (Triton's `optional`).
        self.defaulted = {n.name: n for n in session.get_overridable_initializers()}
        self.outputs = {n.name: n for n in session.get_outputs()}

    def fail(self, field_name: str, message: str) -> BundleError:
        return BundleError(f"{self.where}: {field_name}: {message}")

    def tensor(
        self,
        field_name: str,
        tensor: mc.ModelInput | mc.ModelOutput,
        graph: dict[str, ort.NodeArg],
        max_batch_size: int,
        what: str,
    ) -> None:
        node = graph.get(tensor.name)
        if node is None:
            raise self.fail(
                f"{field_name}.name",
                f"{tensor.name!r} is not an {what} of the ONNX graph "
                f"({what}s: {', '.join(sorted(graph))})",
            )
        try:
            graph_type = kserve_datatypes().onnx_datatype(node.type)
        except ValueError:
            raise self.fail(
                f"{field_name}.data_type", f"the graph's {node.type} is not served"
            ) from None
        config_type = kserve_datatypes().protocol_datatype(tensor.data_type)
        if tensor.data_type == mc.TYPE_INVALID:
            raise self.fail(f"{field_name}.data_type", "missing (the graph has " + graph_type + ")")
        if config_type != graph_type:
            raise self.fail(
                f"{field_name}.data_type",
                f"{mc.DataType.Name(tensor.data_type)} but the graph's {tensor.name!r} is "
                f"{mc.DataType.Name(kserve_datatypes().config_datatype(graph_type))}",
            )
        if any(d < -1 for d in tensor.dims):
            raise self.fail(f"{field_name}.dims", f"{list(tensor.dims)} has a dimension below -1")
        per_row = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
        if (
            tensor.HasField("reshape")
            and -1 not in tensor.dims
            and -1 not in per_row
            and math.prod(tensor.dims) != math.prod(per_row)
        ):
            raise self.fail(
                f"{field_name}.reshape",
                f"{per_row} does not hold the {math.prod(tensor.dims)} elements of dims "
                f"{list(tensor.dims)}",
            )
        want = ([-1] if max_batch_size > 0 else []) + per_row
        have = _graph_shape(node)
        shape_field = (
            f"{field_name}.reshape" if tensor.HasField("reshape") else f"{field_name}.dims"
        )
        agree = len(want) == len(have) and all(
            g == -1 or w == g for w, g in zip(want, have, strict=True)
        )
        if not agree:
            batch_note = " (batch axis first, as max_batch_size > 0)" if max_batch_size else ""
            raise self.fail(
                shape_field,
                f"{per_row} gives shape {want}{batch_note}, but the graph's {tensor.name!r} "
                f"has shape {have}",
            )


def _tensor_from_graph(cls: type, node: ort.NodeArg, batches: bool) -> mc.ModelInput:
    shape = _graph_shape(node)
    dims = shape[1:] if batches else shape
    tensor = cls(
        name=node.name,
        data_type=kserve_datatypes().config_datatype(kserve_datatypes().onnx_datatype(node.type)),
        dims=dims,
    )
    if batches and not dims:
        # A [batch] graph tensor: Triton shows one value per row, dims [1], reshape [].
        tensor.dims[:] = [1]
        tensor.reshape.SetInParent()
    return tensor


def complete_config(
    config: mc.ModelConfig | None,
    session: ort.InferenceSession,
    name: str,
    where: str,
    on_gpu: bool = False,
) -> mc.ModelConfig:
    """``config`` (or an empty one) completed from the graph and checked against it;
    ``on_gpu``: the session runs on CUDA (the kind of a default instance group)."""
    given = config is not None
    done = mc.ModelConfig()
    if config is not None:
        done.CopyFrom(config)
    check = _Checker(where, session)
    if done.name and done.name != name:
        raise check.fail("name", f"{done.name!r} differs from the model directory {name!r}")
    done.name = name
    if done.platform and done.platform != PLATFORM:
        raise check.fail(
            "platform", f"{done.platform!r} is not served (ReachRank serves {PLATFORM!r})"
        )
    if done.backend and done.backend != BACKEND:
        raise check.fail(
            "backend", f"{done.backend!r} is not served (ReachRank serves {BACKEND!r})"
        )
    done.platform, done.backend = PLATFORM, BACKEND
    scheduling = done.WhichOneof("scheduling_choice")
    if scheduling not in (None, "dynamic_batching"):
        raise check.fail(scheduling, "not supported (ReachRank batches with dynamic_batching)")
    if done.max_batch_size < 0:
        raise check.fail("max_batch_size", f"{done.max_batch_size} is negative")
    graph_nodes = [*session.get_inputs(), *session.get_outputs()]
    batchable = _batchable(graph_nodes)
    if not done.input and not done.output and done.max_batch_size == 0 and batchable:
        # Nothing said about shapes or batching: Triton's auto-complete lets the model batch.
        done.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        if not given or scheduling is None:
            done.dynamic_batching.SetInParent()
    if done.max_batch_size > 0 and not batchable:
        fixed = [n.name for n in graph_nodes if _graph_shape(n)[:1] != [-1]]
        raise check.fail(
            "max_batch_size",
            f"{done.max_batch_size} needs a variable first axis on every graph tensor; "
            f"{', '.join(fixed)} have a fixed one (set max_batch_size: 0)",
        )
    batches = done.max_batch_size > 0
    if not done.input:
        done.input.extend(
            _tensor_from_graph(mc.ModelInput, n, batches) for n in check.inputs.values()
        )
    if not done.output:
        done.output.extend(
            _tensor_from_graph(mc.ModelOutput, n, batches) for n in check.outputs.values()
        )
    graph_inputs = {**check.inputs, **check.defaulted}
    seen: set[str] = set()
    for i, tensor in enumerate(done.input):
        if tensor.name in seen:
            raise check.fail(f"input[{i}].name", f"{tensor.name!r} appears twice")
        seen.add(tensor.name)
        check.tensor(f"input[{i}]", tensor, graph_inputs, done.max_batch_size, "input")
    missing = sorted(set(check.inputs) - seen)
    if missing:
        raise check.fail("input", f"the graph also needs inputs {missing}; list them")
    for i, tensor in enumerate(done.output):
        check.tensor(f"output[{i}]", tensor, check.outputs, done.max_batch_size, "output")
    if not done.HasField("version_policy"):
        done.version_policy.latest.num_versions = 1
    if done.HasField("dynamic_batching"):
        for size in done.dynamic_batching.preferred_batch_size:
            if not 0 < size <= max(done.max_batch_size, 1):
                raise check.fail(
                    "dynamic_batching.preferred_batch_size",
                    f"{size} is outside 1..max_batch_size ({done.max_batch_size})",
                )
    if not done.instance_group:
        kind = mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU
        done.instance_group.add(count=1, kind=kind)
    for i, group in enumerate(done.instance_group):
        if group.count < 0:
            raise check.fail(f"instance_group[{i}].count", f"{group.count} is negative")
        if group.count == 0:
            group.count = 1
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = (
                mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU
            )
        if not group.name:
            group.name = f"{name}_{i}"
    if not done.default_model_filename:
        done.default_model_filename = DEFAULT_MODEL_FILENAME
    return done


def instance_count(config: mc.ModelConfig) -> int:
    """Model instances: how many inference calls run at once."""
    return max(1, sum(group.count for group in config.instance_group))


def wants_cpu(config: mc.ModelConfig) -> bool:
    """Every instance group asks for KIND_CPU (the model is kept off a GPU)."""
    return bool(config.instance_group) and all(
        g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group
    )


def parameter(config: mc.ModelConfig, key: str) -> str | None:
    """A ``parameters { key: ... value: { string_value: ... } }`` entry, if set."""
    if key in config.parameters:
        return config.parameters[key].string_value
    return None
