"""The `inference.GRPCInferenceService` servicer over the model registry: each RPC looks up the
model, calls a plain function and returns its message; errors map to status codes in
`grpc_errors`. RPCs ReachRank does not offer (streaming, shared memory, trace, log settings)
answer UNIMPLEMENTED through the generated base class."""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import grpc
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from engine.errors import BundleError, FailedPrecondition, InvalidArgument, NotFound
from engine.kserve.infer import infer
from engine.kserve.metadata import model_config, model_metadata
from engine.kserve.stats import StatsRecorder, statistics_message
from engine.models.base import OnnxModel
from engine.registry import ModelRegistry
from engine.repository import model_names
from engine.servicer import grpc_errors
from engine.settings import Settings

SERVER_NAME = "reachrank"
EXTENSIONS = ("model_repository", "model_configuration", "statistics")


def _server_version() -> str:
    try:
        return version("reachrank")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def serving(model: OnnxModel, requested: str) -> bool:
    """Whether ``model`` is the version asked for ("" means whichever version serves)."""
    return not requested or requested == str(model.id.version)


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.stats = StatsRecorder()
        self.version = _server_version()

    def _model(self, name: str, requested_version: str) -> OnnxModel:
        if not name:
            raise InvalidArgument("model name is required")
        model = self.registry.get(name)
        if not isinstance(model, OnnxModel):
            raise NotFound(f"model {name!r} is a {model.id.kind} table, not a tensor model")
        if not serving(model, requested_version):
            if not requested_version.isdigit():
                raise InvalidArgument(f"model version must be a number, got {requested_version!r}")
            raise NotFound(
                f"model {name!r} version {requested_version} is not served "
                f"(serving version {model.id.version})"
            )
        return model

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
        model = self.registry.find(request.name)
        return pb.ModelReadyResponse(ready=model is not None and serving(model, request.version))

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
        return model_metadata(self._model(request.name, request.version))

    @grpc_errors
    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> pb.ModelConfigResponse:
        model = self._model(request.name, request.version)
        return pb.ModelConfigResponse(config=model_config(model, self.settings.max_score_rows))

    @grpc_errors
    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        model = self._model(request.model_name, request.model_version)
        start = time.perf_counter_ns()
        try:
            response, timing = infer(model, request, self.settings.max_score_rows)
        except Exception:
            self.stats.failure(model.id.name, model.id.version, time.perf_counter_ns() - start)
            raise
        self.stats.success(model.id.name, model.id.version, timing)
        return response

    @grpc_errors
    def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            models = [self._model(request.name, request.version)]
        elif request.version:
            raise InvalidArgument("a version needs a model name")
        else:
            models = [
                m for m in map(self.registry.get, self.registry.names()) if isinstance(m, OnnxModel)
            ]
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
        index = pb.RepositoryIndexResponse.ModelIndex
        models = []
        for name in model_names(self.settings.repo):
            model = self.registry.find(name)
            if model is not None and not isinstance(model, OnnxModel):
                continue  # profile tables are not tensor models
            if model is not None:
                models.append(index(name=name, version=str(model.id.version), state="READY"))
            elif not request.ready:
                models.append(
                    index(name=name, state="UNAVAILABLE", reason=self._why_not_loaded(name))
                )
        return pb.RepositoryIndexResponse(models=models)

    def _why_not_loaded(self, name: str) -> str:
        last = next((e for e in reversed(self.registry.events) if e.name == name), None)
        return last.reason if last is not None and not last.ok else "unloaded"

    @grpc_errors
    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        _check_repository(request.repository_name)
        _check_parameters(request.parameters, allowed=())
        if request.model_name not in model_names(self.settings.repo):
            raise NotFound(f"model {request.model_name!r} is not in the repository")
        try:
            self.registry.load(request.model_name)
        except BundleError as exc:
            raise FailedPrecondition(f"cannot load {request.model_name!r}: {exc}") from None
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        _check_repository(request.repository_name)
        # tritonclient always sends unload_dependents; ReachRank models have no dependents.
        _check_parameters(request.parameters, allowed=("unload_dependents",))
        name = request.model_name
        # Like Triton, unloading a model that is not loaded succeeds; an unknown name does not.
        if self.registry.find(name) is None and name not in model_names(self.settings.repo):
            raise NotFound(f"model {name!r} is neither loaded nor in the repository")
        if self.registry.find(name) is not None:
            self.registry.unload(name)
        return pb.RepositoryModelUnloadResponse()


def _check_repository(name: str) -> None:
    if name:
        raise InvalidArgument(
            f"ReachRank serves one repository; leave repository_name empty (got {name!r})"
        )


def _check_parameters(parameters: Mapping[str, object], allowed: tuple[str, ...]) -> None:
    unsupported = sorted(set(parameters) - set(allowed))
    if unsupported:
        raise InvalidArgument(
            f"parameters {unsupported} are not supported (config overrides and model files "
            "cannot be sent; models come from the repository)"
        )
