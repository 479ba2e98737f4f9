"""A trivial gRPC endpoint for measuring load generators: grpc.health.v1 Check answered with
fixed bytes (SERVING), no protobuf parsing, so the server's cost is gRPC's alone.

    python -m bench.trivial_endpoint --port 50777
"""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc

# HealthCheckResponse{status: SERVING} serialised: field 1, varint 1.
SERVING = b"\x08\x01"


def serve(port: int, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    handler = grpc.unary_unary_rpc_method_handler(lambda _request, _context: SERVING)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": handler}),)
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(bound, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    serve(args.port, args.threads)
