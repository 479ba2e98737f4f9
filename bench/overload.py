"""Overload: offer several times the rate a server sustains and record what it does with it.

Starts `reachrank serve` in a subprocess on a free loopback port, measures the sustainable
RankAds rate (closed loop), then offers `--factor` times that rate open-loop for `--seconds`
and reports accepted vs refused calls, the latency of accepted calls, the server's RSS before,
at the end of and after the overload, and the latency of calls right after it (recovery).
One row per admission limit (`max_concurrent_rpcs`; the other settings are the defaults).

    python -m bench.overload [--repo model_repo] [--ads 500] [--seconds 5] [--factor 5]
                             [--limits 256,64,16]

Without --repo it simulates a marketplace and trains a small repository first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from reachrank.v1 import ranking_pb2

from bench.kserve import train_repository
from clients import ReachRankClient

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start(repo: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    code = "import sys; from engine.cli import serve; serve(sys.argv[1:])"
    args = ["--repo", str(repo), "--port", str(port), "--metrics-port", "-1"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        # This checkout's packages and its generated code (proto/), whatever the venv installed.
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "proto")]), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with ReachRankClient(f"127.0.0.1:{port}") as client:
        client.wait_ready(timeout=120)
    return proc, port


def request_bytes(ads: int) -> bytes:
    rng = np.random.default_rng(0)
    request = ranking_pb2.RankAdsRequest(
        user_id="u1",
        ads=[ranking_pb2.Ad(ad_id=f"a{i}", bid=float(b)) for i, b in enumerate(rng.random(ads))],
        slots=3,
        context={"position": "1"},
    )
    return request.SerializeToString()


def sustainable_rate(channel: grpc.Channel, payload: bytes, seconds: float) -> float:
    """Calls/s of a closed loop with 8 in flight (the server's thread count)."""
    call = channel.unary_unary("/reachrank.v1.Ranking/RankAds")
    done, stop = [0], time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            call(payload, timeout=10)
            done[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - start)


def offer(
    channel: grpc.Channel, payload: bytes, rate: float, seconds: float, deadline: float
) -> tuple[Counter[str], list[float], list[float], float]:
    """Open loop at `rate` for `seconds`: status counts, accepted and refused latencies (s),
    elapsed."""
    call = channel.unary_unary("/reachrank.v1.Ranking/RankAds")
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    refusals: list[float] = []
    lock = threading.Lock()
    total = int(rate * seconds)
    finished = threading.Semaphore(0)

    def on_done(sent: float) -> object:
        def callback(future: grpc.Future) -> None:
            elapsed = time.monotonic() - sent
            code = future.code()
            with lock:
                codes[code.name] += 1
                if code == grpc.StatusCode.OK:
                    latencies.append(elapsed)
                elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refusals.append(elapsed)
            finished.release()

        return callback

    start = time.monotonic()
    for i in range(total):
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        sent = time.monotonic()
        call.future(payload, timeout=deadline).add_done_callback(on_done(sent))
    offered_for = time.monotonic() - start
    for _ in range(total):
        finished.acquire()
    return codes, latencies, refusals, offered_for


def recovery_ms(channel: grpc.Channel, payload: bytes, calls: int = 20) -> float:
    """Median latency of sequential calls right after the overload."""
    call = channel.unary_unary("/reachrank.v1.Ranking/RankAds")
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call(payload, timeout=10)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def run_config(repo: Path, name: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    proc, port = start(repo, env)
    try:
        payload = request_bytes(args.ads)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            sustainable_rate(channel, payload, 1.0)  # warm-up
            sustained = sustainable_rate(channel, payload, args.measure_seconds)
            rss_before = rss_mib(proc.pid)
            rate = sustained * args.factor
            codes, latencies, refusals, offered_for = offer(
                channel, payload, rate, args.seconds, args.deadline_ms / 1000
            )
            rss_end = rss_mib(proc.pid)
            recovery = recovery_ms(channel, payload)
            rss_after = rss_mib(proc.pid)
        accepted = codes.get("OK", 0)
        row = {
            "config": name,
            "env": env,
            "ads": args.ads,
            "sustainable_per_s": round(sustained, 1),
            "offered_per_s": round(sum(codes.values()) / offered_for, 1),
            "accepted_per_s": round(accepted / offered_for, 1),
            "codes": dict(codes),
            "accepted_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1)
            if latencies
            else None,
            "accepted_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1)
            if latencies
            else None,
            "refused_p50_ms": round(float(np.percentile(refusals, 50)) * 1000, 2)
            if refusals
            else None,
            "refused_p99_ms": round(float(np.percentile(refusals, 99)) * 1000, 2)
            if refusals
            else None,
            "rss_mib_before": round(rss_before, 1),
            "rss_mib_end": round(rss_end, 1),
            "rss_mib_after": round(rss_after, 1),
            "recovery_p50_ms": round(recovery, 2),
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table(rows: list[dict]) -> str:
    lines = [
        "| config | sustainable/s | offered/s | accepted/s | refused (RESOURCE_EXHAUSTED) "
        "| refusal p50 / p99 ms | deadline exceeded | accepted p50 ms | accepted p99 ms | RSS MiB before / end / after "
        "| next call p50 ms |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['sustainable_per_s']:.0f} | {r['offered_per_s']:.0f} "
            f"| {r['accepted_per_s']:.0f} | {r['codes'].get('RESOURCE_EXHAUSTED', 0)} "
            f"| {r['refused_p50_ms']} / {r['refused_p99_ms']} "
            f"| {r['codes'].get('DEADLINE_EXCEEDED', 0)} | {r['accepted_p50_ms']} "
            f"| {r['accepted_p99_ms']} | {r['rss_mib_before']:.0f} / {r['rss_mib_end']:.0f} / "
            f"{r['rss_mib_after']:.0f} | {r['recovery_p50_ms']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="model repository (default: train a small one)")
    parser.add_argument("--ads", type=int, default=500, help="ads per RankAds call")
    parser.add_argument("--seconds", type=float, default=5.0, help="overload duration")
    parser.add_argument("--measure-seconds", type=float, default=3.0)
    parser.add_argument("--factor", type=float, default=5.0, help="offered / sustainable rate")
    parser.add_argument("--deadline-ms", type=float, default=1000.0, help="client deadline")
    parser.add_argument(
        "--limits", default="256,64,16", help="max_concurrent_rpcs values, one row each"
    )
    args = parser.parse_args()
    configs = [
        (f"max_concurrent_rpcs {n}", {"REACHRANK_MAX_CONCURRENT_RPCS": n})
        for n in args.limits.split(",")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or train_repository(Path(tmp))
        rows = [run_config(repo, name, env, args) for name, env in configs]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overload.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
