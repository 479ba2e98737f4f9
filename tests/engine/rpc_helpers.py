"""Raw gRPC calls for tests that send bytes the typed stubs cannot: fuzzing, access control."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from reachrank.kserve.v2 import grpc_service_pb2
from reachrank.v1 import feedback_pb2, models_pb2, ranking_pb2

TIMEOUT = 10.0


def raw_call(channel: grpc.Channel, path: str, payload: bytes) -> grpc.StatusCode:
    """Send bytes as the request of `path`; the status code of the answer."""
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        call(payload, timeout=TIMEOUT)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def unary_paths() -> list[str]:
    """Every unary method path of the services ReachRank serves (and Health)."""
    paths = []
    for module in (ranking_pb2, models_pb2, feedback_pb2, grpc_service_pb2, health_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if not method.client_streaming and not method.server_streaming:
                    paths.append(f"/{service.full_name}/{method.name}")
    return paths
