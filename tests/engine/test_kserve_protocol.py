"""The vendored `inference` protocol is exactly the schema tritonclient 2.51.0 (and the
perf_analyzer in its wheel) speaks: every message, field number, type and RPC, and the file
names. Compared in child processes, each holding one copy, so that a difference shows as a diff
here rather than as protobuf refusing the second copy (test_kserve_one_process.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Prints each file's descriptor, file name and imports included: protobuf's default pool takes
# both copies in one process only if the two are equal (proto/generate.py).
DUMP = """
import sys
from google.protobuf import descriptor_pb2
if sys.argv[1] == "tritonclient":
    from tritonclient.grpc import model_config_pb2 as config, service_pb2 as service
else:
    from reachrank.kserve.v2 import grpc_service_pb2 as service, model_config_pb2 as config
for module in (service, config):
    proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
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
