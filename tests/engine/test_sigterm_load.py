"""SIGTERM to a real `reachrank serve` process under RankAds load: every call the server had
started handling completes OK; calls that arrive after the signal are refused UNAVAILABLE
(safe to retry elsewhere), never failed half-way.

Which calls the server started is read from its own access log (JSON at DEBUG: one line per
RPC that entered a handler, with the request id the client sent)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from clients import ClientOptions, ReachRankClient
from clients.errors import ReachRankError
from tests.engine.test_feedback_crash import serve
from tests.threads import Workers

THREADS = 12
ADS = [{"ad_id": f"a{i}", "bid": 1.0 + i % 5} for i in range(200)]


def test_sigterm_under_load_fails_no_call_the_server_started(
    trained_repo: Path, tmp_path: Path
) -> None:
    outcomes: list[tuple[str, str]] = []  # (request id, status code name)
    lock = threading.Lock()
    calls = threading.Semaphore(0)

    def load(address: str, worker: int) -> None:
        options = ClientOptions(max_attempts=1, timeout=30)
        with ReachRankClient(address, options) as client:
            n = 0
            while True:
                rid = f"w{worker}-{n}"
                n += 1
                try:
                    client.rank_ads("u1", ADS, slots=3, request_id=rid)
                    code = "OK"
                except ReachRankError as error:
                    code = error.code.name
                with lock:
                    outcomes.append((rid, code))
                calls.release()
                if code != "OK":  # refused: the server is draining or gone
                    return

    env = {"REACHRANK_GRACE_PERIOD_S": "20", "REACHRANK_GRPC_THREADS": str(THREADS)}
    log_args = ["--log-level", "DEBUG", "--log-json"]
    with serve(trained_repo, tmp_path / "feedback", log_args, **env) as (process, address):
        workers = Workers()
        for w in range(THREADS):
            workers.start(load, address, w)
        for _ in range(200):  # well under way
            assert calls.acquire(timeout=120)
        process.send_signal(signal.SIGTERM)
        workers.join()
        assert process.wait(timeout=120) == 0
        process.log_reader.join(120)  # the server's log is read to its end
        assert not process.log_reader.is_alive()

    handled = {}
    for line in list(process.log_lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            record.get("logger") == "engine.observability"
            and " RankAds " in f" {record['message']} "
        ):
            handled[record["request_id"]] = record["message"].split()[1]
    codes = dict(outcomes)
    # Refused calls are UNAVAILABLE, which clients retry (gRPC's own stop answers CANCELLED).
    assert set(codes.values()) <= {"OK", "UNAVAILABLE"}, set(codes.values())
    refused = [rid for rid, code in codes.items() if code != "OK"]
    assert refused, "no call arrived after SIGTERM: the test did not test the drain"
    started = [rid for rid in codes if rid in handled]
    assert len(started) >= 200
    # Every call the server started handling finished OK, on its side and on the client's.
    assert all(codes[rid] == "OK" and handled[rid] == "OK" for rid in started)
    # A refused call never entered a handler.
    assert not set(refused) & set(handled)
