"""The KServe v2 / Triton open inference protocol (`inference.GRPCInferenceService`) over the
model registry, served on the same gRPC server and port as ReachRank's own services."""

from __future__ import annotations

import grpc
from reachrank.kserve.v2 import grpc_service_pb2, grpc_service_pb2_grpc

from engine.kserve.servicer import KServeServicer
from engine.registry import ModelRegistry
from engine.settings import Settings

SERVICE_NAME = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def add_kserve_to_server(
    server: grpc.Server, registry: ModelRegistry, settings: Settings
) -> KServeServicer:
    """Register the protocol's servicer on ``server``; returns it (its ``stats`` included)."""
    servicer = KServeServicer(registry, settings)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return servicer
