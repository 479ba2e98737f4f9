"""The ``reachrank.v1.Experiments`` servicer: create, list and delete experiments in the store.

Experiments set by RPC live in memory; the ones that must survive a restart belong in the
settings' ``experiments_file``.
"""

from __future__ import annotations

import grpc
from reachrank.v1 import models_pb2, models_pb2_grpc

from engine.experiments import ExperimentStore
from engine.servicer import grpc_errors


class ExperimentsServicer(models_pb2_grpc.ExperimentsServicer):
    def __init__(self, store: ExperimentStore) -> None:
        self.store = store

    @grpc_errors
    def Set(
        self, request: models_pb2.Experiment, context: grpc.ServicerContext
    ) -> models_pb2.Experiment:
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
