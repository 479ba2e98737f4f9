"""The `inference.GRPCInferenceService` servicer over the model registry: each RPC looks up the
model, calls a plain function and returns its message; errors map to status codes in
`grpc_errors`. RPCs ReachRank does not offer (streaming, CUDA shared memory, trace, log
settings) answer UNIMPLEMENTED through the generated base class; system shared memory is
engine.kserve.shm.

Only ONNX models (CTR, retrieval, and any ONNX model in Triton's layout: engine.models.triton,
engine.kserve.triton_infer) are visible to the protocol; other kinds, such as profiles, are
served by ReachRank's own RPCs and listed as UNAVAILABLE in the repository index.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import grpc
from google.protobuf import json_format
from reachrank.kserve.v2 import grpc_service_pb2 as pb
from reachrank.kserve.v2 import grpc_service_pb2_grpc as pb_grpc
from reachrank.kserve.v2 import model_config_pb2 as mc

from engine.errors import BundleError, InvalidArgument, NotFound, ServingError
from engine.grpc_adapter import grpc_errors
from engine.kserve.fast import fast_infer
from engine.kserve.infer import infer
from engine.kserve.metadata import model_config, model_metadata
from engine.kserve.shm import SharedMemoryRegions, inputs_from_shm, outputs_to_shm
from engine.kserve.stats import StatsRecorder, statistics_message
from engine.kserve.triton_infer import triton_infer, triton_metadata
from engine.models.base import OnnxModel
from engine.models.triton import TritonModel
from engine.registry import MODEL_KINDS, ModelRegistry, ModelState
from engine.repository import is_triton_model, model_names
from engine.settings import Settings

SERVER_NAME = "reachrank"
EXTENSIONS = ("model_repository", "model_configuration", "statistics", "system_shared_memory")
_ONNX_KINDS = frozenset(
    k for k, cls in MODEL_KINDS.items() if isinstance(cls, type) and issubclass(cls, OnnxModel)
)


def _server_version() -> str:
    try:
        return version("reachrank")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def parse_version(requested: str) -> int | None:
    """The protocol's version string as the registry's number ("" means the serving one)."""
    if not requested:
        return None
    if not requested.isdigit():
        raise InvalidArgument(f"model version must be a number, got {requested!r}")
    return int(requested)


def index_entries(state: ModelState) -> list[pb.RepositoryIndexResponse.ModelIndex]:
    """Triton's index rows for one model: one READY row per loaded version, or one
    UNAVAILABLE row saying why nothing is loaded."""
    index = pb.RepositoryIndexResponse.ModelIndex
    if state.loaded_versions and state.kind not in _ONNX_KINDS:
        reason = f"kind {state.kind!r} is served by ReachRank's own RPCs, not this protocol"
        return [
            index(name=state.name, version=str(state.version), state="UNAVAILABLE", reason=reason)
        ]
    if state.loaded_versions:
        return [
            index(name=state.name, version=str(v), state="READY") for v in state.loaded_versions
        ]
    return [index(name=state.name, state="UNAVAILABLE", reason=state.last_error or "unloaded")]


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.stats = StatsRecorder()
        self.version = _server_version()
        self.shm = SharedMemoryRegions()

    def _model(self, name: str, requested_version: str) -> OnnxModel:
        if not name:
            raise InvalidArgument("model name is required")
        model = self.registry.get(name, parse_version(requested_version))
        if not isinstance(model, OnnxModel):
            raise NotFound(
                f"model {name!r} ({model.id.kind}) has no ONNX graph to serve over this protocol"
            )
        return model

    def _state(self, name: str) -> ModelState:
        return next(s for s in self.registry.states() if s.name == name)

    def _loaded(self) -> list[OnnxModel]:
        """Every loaded version of every ONNX model."""
        states = [s for s in self.registry.states() if s.kind in _ONNX_KINDS]
        return [self._model(s.name, str(v)) for s in states for v in s.loaded_versions]

    @grpc_errors
    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_errors
    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.registry.ready())

    @grpc_errors
    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._model(request.name, request.version)
        except ServingError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @grpc_errors
    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self.version, extensions=EXTENSIONS
        )

    @grpc_errors
    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self._model(request.name, request.version)
        versions = self._state(request.name).loaded_versions
        if isinstance(model, TritonModel):
            return triton_metadata(model, versions)
        return model_metadata(model, versions)

    @grpc_errors
    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> pb.ModelConfigResponse:
        model = self._model(request.name, request.version)
        if isinstance(model, TritonModel):  # what config.pbtxt said, completed from the graph
            return pb.ModelConfigResponse(config=model.config)
        return pb.ModelConfigResponse(config=model_config(model, self.settings.max_score_rows))

    @grpc_errors
    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        model = self._model(request.model_name, request.model_version)
        rows = self.settings.max_score_rows
        start = time.perf_counter_ns()
        try:
            fast = None if isinstance(model, TritonModel) else fast_infer(model, request, rows)
            if fast is not None:  # raw contents and nothing else: planned once per model
                self.stats.success(model.id.name, model.id.version, fast[1])
                return fast[0]
            shared = inputs_from_shm(request, self.shm)
            if isinstance(model, TritonModel):
                response, timing = triton_infer(model, shared)
            else:
                response, timing = infer(model, shared, rows)
            outputs_to_shm(request, response, self.shm)
        except Exception:
            self.stats.failure(model.id.name, model.id.version, time.perf_counter_ns() - start)
            raise
        self.stats.success(model.id.name, model.id.version, timing)
        return response

    @grpc_errors
    def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: grpc.ServicerContext
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @grpc_errors
    def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: grpc.ServicerContext
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.shm.unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @grpc_errors
    def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: grpc.ServicerContext
    ) -> pb.SystemSharedMemoryStatusResponse:
        status = pb.SystemSharedMemoryStatusResponse.RegionStatus
        return pb.SystemSharedMemoryStatusResponse(
            regions={
                r.name: status(name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size)
                for r in self.shm.status(request.name)
            }
        )

    @grpc_errors
    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self._model(request.name, request.version)]
        elif request.version:
            raise InvalidArgument("a version needs a model name")
        else:
            models = self._loaded()
        return pb.ModelStatisticsResponse(
            model_stats=[
                statistics_message(
                    m.id.name, m.id.version, self.stats.snapshot(m.id.name, m.id.version)
                )
                for m in models
            ]
        )

    @grpc_errors
    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        _check_repository(request.repository_name)
        rows = [row for state in self.registry.states() for row in index_entries(state)]
        if request.ready:
            rows = [row for row in rows if row.state == "READY"]
        return pb.RepositoryIndexResponse(models=rows)

    @grpc_errors
    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        _check_repository(request.repository_name)
        name = request.model_name
        if name not in model_names(self.settings.repo):
            raise NotFound(f"failed to load {name!r}: no such model in the repository")
        triton = is_triton_model(self.settings.repo / name)
        _check_parameters(request.parameters, allowed=("config",) if triton else ())
        override = None
        if "config" in request.parameters:
            override = config_override(name, request.parameters["config"].string_param)
        try:
            self.registry.load(name, config=override)
        except BundleError as exc:
            raise BundleError(f"failed to load {name!r}: {exc}") from None
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        _check_repository(request.repository_name)
        # tritonclient always sends unload_dependents; ReachRank models have no dependents.
        _check_parameters(request.parameters, allowed=("unload_dependents",))
        try:
            self.registry.unload(request.model_name)
        except NotFound:
            # Like Triton, unloading a repository model that is not loaded succeeds.
            if request.model_name not in model_names(self.settings.repo):
                raise
        return pb.RepositoryModelUnloadResponse()


def _check_repository(name: str) -> None:
    if name:
        raise InvalidArgument(
            f"ReachRank serves one repository; leave repository_name empty (got {name!r})"
        )


def _check_parameters(parameters: Mapping[str, object], allowed: tuple[str, ...]) -> None:
    unsupported = sorted(set(parameters) - set(allowed))
    files = [p for p in unsupported if p.startswith("file:")]
    if files:
        raise InvalidArgument(
            f"Invalid file path {files[0][:80]!r}: model files cannot be sent with a load "
            "request; put them in the repository"
        )
    if unsupported:
        raise InvalidArgument(
            f"parameters {unsupported} are not supported (a config override is for Triton-layout "
            "models only; models come from the repository)"
        )


def config_override(name: str, text: str) -> mc.ModelConfig:
    """The JSON ModelConfig sent with a load request, which replaces config.pbtxt (Triton)."""
    try:
        return json_format.Parse(text, mc.ModelConfig())
    except json_format.ParseError as exc:
        raise InvalidArgument(
            f"failed to load {name!r}: the config parameter is not a JSON "
            f"inference.ModelConfig: {exc}"
        ) from None
