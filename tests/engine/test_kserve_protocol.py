"""The vendored `inference` protocol is exactly the schema tritonclient 2.51.0 (and the
perf_analyzer in its wheel) speaks: every message, field number, type and RPC. Compared in child
processes, because the two sets of generated code cannot share one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Prints each file's descriptor with the file name and import path normalised: tritonclient
# generates from "grpc_service.proto", ReachRank from "inference/grpc_service.proto".
DUMP = """
import sys
from google.protobuf import descriptor_pb2
if sys.argv[1] == "tritonclient":
    from tritonclient.grpc import model_config_pb2 as config, service_pb2 as service
else:
    from inference import grpc_service_pb2 as service, model_config_pb2 as config
for module in (service, config):
    proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
    proto.name = proto.name.rsplit("/", 1)[-1]
    proto.dependency[:] = [d.rsplit("/", 1)[-1] for d in proto.dependency]
    print(proto.SerializeToString(deterministic=True).hex())
"""


def _dump(which: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", DUMP, which],
        capture_output=True,
        text=True,
        cwd=ROOT / "proto",
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_vendored_protocol_equals_tritonclient_schema() -> None:
    ours, theirs = _dump("reachrank"), _dump("tritonclient")
    assert len(ours) == 2 and all(ours)
    assert ours == theirs
