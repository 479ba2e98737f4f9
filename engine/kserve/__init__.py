"""The KServe v2 / Triton open inference protocol (`inference.GRPCInferenceService`) over the
model registry, served on the same gRPC server and port as ReachRank's own services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reachrank.kserve.v2 import grpc_service_pb2, grpc_service_pb2_grpc

if TYPE_CHECKING:
    import grpc

    from engine.kserve.servicer import KServeServicer
    from engine.registry import ModelRegistry
    from engine.settings import Settings

SERVICE_NAME = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def add_kserve_to_server(
    server: grpc.Server, registry: ModelRegistry, settings: Settings
) -> KServeServicer:
    """Register the protocol's servicer on ``server``; returns it (its ``stats`` included)."""
    # Imported here: the servicer imports the registry, whose Triton model class imports
    # engine.kserve.datatypes, which runs this package's __init__ first.
    from engine.kserve.servicer import KServeServicer

    servicer = KServeServicer(registry, settings)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return servicer
