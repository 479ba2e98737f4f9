"""`reachrank.v1.ModelService`: list, load and unload models of the repository."""

from __future__ import annotations

import grpc
from reachrank.v1 import models_pb2, models_pb2_grpc

from engine.errors import BundleError, InvalidArgument, NotFound
from engine.grpc_adapter import grpc_errors
from engine.registry import ModelRegistry, ModelState
from engine.repository import is_model_name, versions


def model_status(state: ModelState) -> models_pb2.ModelStatus:
    return models_pb2.ModelStatus(
        name=state.name,
        version=state.version,
        kind=state.kind,
        provider=state.provider,
        available_versions=state.available_versions,
        loaded_versions=state.loaded_versions,
        state=state.state,
        last_error=state.last_error,
        policy=state.policy,
    )


class ModelServiceServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def _status(self, name: str) -> models_pb2.ModelStatus:
        for state in self.registry.states():
            if state.name == name:
                return model_status(state)
        raise NotFound(f"model {name!r} is not in the repository")

    @grpc_errors
    def List(
        self, request: models_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(
            models=[model_status(s) for s in self.registry.states()]
        )

    @grpc_errors
    def Load(
        self, request: models_pb2.LoadModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.LoadModelResponse:
        if not request.name:
            raise InvalidArgument("name is required")
        if not is_model_name(request.name):
            raise InvalidArgument(
                f"name {request.name!r} is not a model name (one directory of the repository)"
            )
        if request.version < 0:
            raise InvalidArgument(f"version must be >= 0, got {request.version}")
        available = versions(self.registry.settings.repo, request.name)
        if not available:
            raise NotFound(f"model {request.name!r} has no versions in the repository")
        if request.version and request.version not in available:
            raise NotFound(
                f"model {request.name!r} has no version {request.version} (has {available})"
            )
        try:
            self.registry.load(request.name, request.version or None)
        except BundleError as exc:  # FAILED_PRECONDITION, as every BundleError (grpc_adapter)
            raise BundleError(f"load refused, the serving version stays: {exc}") from None
        return models_pb2.LoadModelResponse(model=self._status(request.name))

    @grpc_errors
    def Unload(
        self, request: models_pb2.UnloadModelRequest, context: grpc.ServicerContext
    ) -> models_pb2.UnloadModelResponse:
        if not request.name:
            raise InvalidArgument("name is required")
        self.registry.unload(request.name)
        return models_pb2.UnloadModelResponse(model=self._status(request.name))
