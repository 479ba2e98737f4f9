"""Metrics, request ids and structured logs, against a real server."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reachrank.v1 import ranking_pb2, ranking_pb2_grpc

from clients.errors import ReachRankError
from engine.observability import RequestIdFilter, configure_logging
from engine.server import RunningServer, start_server
from engine.settings import Settings


@pytest.fixture(scope="module")
def observed(trained_repo: Path) -> Iterator[RunningServer]:
    running = start_server(Settings(repo=trained_repo, port=0, metrics_port=0))
    yield running
    running.stop(0)


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_errors_latency_and_batches_are_counted(observed: RunningServer) -> None:
    from clients import ReachRankClient

    before = scrape(observed)
    with ReachRankClient(f"127.0.0.1:{observed.port}") as client:
        for _ in range(3):
            client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 0.5}])
        with pytest.raises(ReachRankError):
            client.recommend("u1", k=0)
    after = scrape(observed)
    assert (
        value(after, "reachrank_requests_total", rpc="RankAds", code="OK", variant="")
        - value(before, "reachrank_requests_total", rpc="RankAds", code="OK", variant="")
        == 3
    )
    assert (
        value(
            after, "reachrank_requests_total", rpc="Recommend", code="INVALID_ARGUMENT", variant=""
        )
        >= 1
    )
    version = str(observed.registry.get("ctr").id.version)
    assert (
        value(
            after,
            "reachrank_model_requests_total",
            rpc="RankAds",
            model="ctr",
            version=version,
            code="OK",
        )
        >= 3
    )
    assert value(after, "reachrank_request_seconds_count", rpc="RankAds") >= 3
    assert value(after, "reachrank_batch_rows_count", model="ctr") >= 3
    assert value(after, "reachrank_inference_seconds_count", model="ctr") >= 3
    assert value(after, "reachrank_model_loads_total", model="ctr", outcome="ok") >= 1
    assert value(after, "reachrank_model_serving_version", model="ctr") >= 1


def test_request_id_round_trips_and_reaches_the_logs(
    observed: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{observed.port}")
    stub = ranking_pb2_grpc.RankingStub(channel)
    _, call = stub.Recommend.with_call(
        ranking_pb2.RecommendRequest(user_id="u1", k=2), metadata=(("x-request-id", "abc-123"),)
    )
    assert ("x-request-id", "abc-123") in call.trailing_metadata()
    _, call = stub.Recommend.with_call(ranking_pb2.RecommendRequest(user_id="u1", k=2))
    generated = dict(call.trailing_metadata())["x-request-id"]
    assert len(generated) == 32
    # What the server logs while serving a request carries that request's id.
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.DEBUG, logger="engine.observability"):
        broken = ranking_pb2.ScoreRequest(model="ctr")
        broken.inputs["cat"].dtype = "int64"
        broken.inputs["cat"].shape.extend([2, 3])
        with pytest.raises(grpc.RpcError) as err:
            stub.Score(broken, metadata=(("x-request-id", "req-77"),))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    access = [r for r in caplog.records if r.getMessage().startswith("Score INVALID_ARGUMENT")]
    assert access and access[-1].request_id == "req-77"


def test_json_log_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", json_format=True)
        logging.getLogger("engine.test").info("hello %s", "world")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["message"] == "hello world"
    assert line["level"] == "INFO" and line["logger"] == "engine.test"
    assert line["request_id"] == "-"
