"""The ``reachrank.v1.Experiments`` servicer: create, list and delete experiments in the store.

With the settings' ``experiments_file``, changes are written through to it (and every server
process adopts them); without it, experiments set by RPC live in this process's memory only.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from reachrank.v1 import models_pb2, models_pb2_grpc

from engine.experiments import ExperimentStore, validate
from engine.grpc_adapter import grpc_errors


class ExperimentsServicer(models_pb2_grpc.ExperimentsServicer):
    def __init__(
        self,
        store: ExperimentStore,
        prepare: Callable[[models_pb2.Experiment], None] | None = None,
    ) -> None:
        self.store = store
        # Loads the arms' model versions before the experiment takes traffic.
        self.prepare = prepare

    @grpc_errors
    def Set(
        self, request: models_pb2.Experiment, context: grpc.ServicerContext
    ) -> models_pb2.Experiment:
        validate(request)
        if self.prepare is not None:
            self.prepare(request)
        return self.store.set(request)

    @grpc_errors
    def List(
        self, request: models_pb2.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> models_pb2.ListExperimentsResponse:
        return models_pb2.ListExperimentsResponse(experiments=self.store.list())

    @grpc_errors
    def Delete(
        self, request: models_pb2.DeleteExperimentRequest, context: grpc.ServicerContext
    ) -> models_pb2.DeleteExperimentResponse:
        self.store.delete(request.name)
        return models_pb2.DeleteExperimentResponse()
