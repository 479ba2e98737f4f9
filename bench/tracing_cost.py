"""Server CPU per request with decision traces off and on (OTLP/gRPC to a receiver in this
process), by bench.cpu_cost's method: utime + stime of the server process over a fixed-load
run divided by the calls answered, off, on and on with 10% of traces sampled, alternating in one run.

Run: ``python -m bench.tracing_cost [--repo model_repo] [--seconds 5] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.cpu_cost import RESULTS, demo_repository, measure


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts the spans it is sent (the collector's side of OTLP/gRPC)."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="Repository to serve (default: train the demo).")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--out", type=Path, default=RESULTS / "tracing_cost.json")
    args = parser.parse_args()
    receiver = _Receiver()
    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    on = {"REACHRANK_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    modes: dict[str, dict[str, str]] = {
        "off": {},
        "on": on,
        "on, 10% sampled": {**on, "REACHRANK_TRACE_SAMPLE_RATIO": "0.1"},
    }
    runs: dict[str, list[list[dict[str, Any]]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or demo_repository(Path(tmp))
        for _ in range(args.rounds):
            for mode, env in modes.items():
                runs[mode].append(
                    measure(repo, args.seconds, args.concurrency, args.users, args.items, env)
                )
    collector.stop(0)
    rows = []
    for i, first in enumerate(runs["off"][0]):
        cpu = {m: statistics.median(r[i]["cpu_us_per_request"] for r in runs[m]) for m in modes}
        rows.append({"call": first["call"], "cpu_us": cpu, "rounds": args.rounds})
    print("| call | " + " | ".join(f"server CPU per request, {m}" for m in modes) + " |")
    print("|---|" + "---:|" * len(modes))
    for r in rows:
        off = r["cpu_us"]["off"]
        cells = [f"{off:,.0f} µs"] + [
            f"{r['cpu_us'][m]:,.0f} µs ({r['cpu_us'][m] / off:.2f}x)" for m in modes if m != "off"
        ]
        print(f"| {r['call']} | " + " | ".join(cells) + " |")
    print(f"spans received: {receiver.spans}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "spans": receiver.spans, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
