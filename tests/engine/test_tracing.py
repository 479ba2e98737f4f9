"""Decision traces on a real server: one SERVER span per decision RPC with its stages as
children, the caller's W3C trace context followed and the server's returned, the SDK
propagating it; one real OTLP/gRPC export to a receiver started here; nothing wrapped when
tracing is off."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from reachrank.v1 import models_pb2, models_pb2_grpc, ranking_pb2, ranking_pb2_grpc

import engine.pipelines
import engine.servicer
from clients import ReachRankClient, ReachRankError, trace_context
from engine.models.ctr import CTRModel
from engine.server import RunningServer, start_server
from engine.settings import Settings
from engine.tracing import STAGES, sampled
from tests.engine.kserve_helpers import ctr_inputs, open_stub, raw_request

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
ADS = [{"ad_id": f"i{i}", "bid": 1.0 + i / 10} for i in range(6)]


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, trained_repo: Path, exporter: InMemorySpanExporter
) -> Iterator[RunningServer]:
    settings = Settings(
        repo=trained_repo,
        port=0,
        decision_log_dir=tmp_path_factory.mktemp("traced") / "decisions",
        decision_sample_rates={"recommend": 1.0, "rank_ads": 1.0},
    )
    running = start_server(settings, span_exporter=exporter)
    yield running
    running.stop(0)


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter


def _tree(found: tuple[ReadableSpan, ...]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one server span and its direct children (every span of the call is one or other)."""
    (root,) = [s for s in found if s.kind is SpanKind.SERVER]
    children = [
        s for s in found if s.parent is not None and s.parent.span_id == root.context.span_id
    ]
    assert len(children) == len(found) - 1, [s.name for s in found]
    assert {s.context.trace_id for s in found} == {root.context.trace_id}
    return root, children


def test_recommend_follows_the_callers_traceparent(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    address = f"127.0.0.1:{traced.port}"
    with ReachRankClient(address) as client, trace_context(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"):
        result = client.recommend("u1", k=3, request_id="rid-trace-1")
    assert len(result.items) == 3
    root, children = _tree(spans.get_finished_spans())
    assert root.name == "reachrank.v1.Ranking/Recommend"
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert format(root.parent.span_id, "016x") == CALLER_SPAN and root.parent.is_remote
    attributes = root.attributes
    assert attributes["rpc.system"] == "grpc" and attributes["rpc.method"] == "Recommend"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["reachrank.request_id"] == "rid-trace-1"
    assert attributes["reachrank.strategy"] == result.strategy
    assert list(attributes["reachrank.models"]) == [f"{m.name}/{m.version}" for m in result.models]
    names = [s.name for s in sorted(children, key=lambda s: s.start_time)]
    assert names == ["route", "retrieve", "features", "infer", "log"]
    by_name = {s.name: s for s in children}
    ctr = traced.registry.get("ctr")
    assert by_name["infer"].attributes["reachrank.model"] == ctr.id.name
    assert by_name["infer"].attributes["reachrank.model_version"] == ctr.id.version
    retrieved = by_name["retrieve"].attributes["reachrank.rows"]
    assert retrieved >= 3 and by_name["features"].attributes["reachrank.rows"] == retrieved


def test_rank_ads_is_a_child_of_the_callers_current_span(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    caller = TracerProvider().get_tracer("test-caller")
    address = f"127.0.0.1:{traced.port}"
    with ReachRankClient(address) as client, caller.start_as_current_span("checkout") as mine:
        auction = client.rank_ads("u2", ADS, slots=2)
    assert auction.ads
    root, children = _tree(spans.get_finished_spans())
    assert root.name == "reachrank.v1.Ranking/RankAds"
    assert root.context.trace_id == mine.get_span_context().trace_id
    assert root.parent.span_id == mine.get_span_context().span_id
    names = [s.name for s in sorted(children, key=lambda s: s.start_time)]
    assert names == ["route", "features", "infer", "auction", "log"]
    by_name = {s.name: s for s in children}
    assert by_name["features"].attributes["reachrank.rows"] == len(ADS)
    assert by_name["auction"].attributes["reachrank.rows"] == len(ADS)


def test_the_shadow_hand_off_is_a_stage(traced: RunningServer, spans: InMemorySpanExporter) -> None:
    stub = models_pb2_grpc.ExperimentsStub(grpc.insecure_channel(f"127.0.0.1:{traced.port}"))
    stub.Set(
        models_pb2.Experiment(
            name="traced-shadow",
            rpcs=["rank_ads"],
            enabled=True,
            variants=[models_pb2.Variant(name="control", weight=1)],
            shadows=[models_pb2.Shadow(name="same", sample_rate=1.0)],
        )
    )
    try:
        with ReachRankClient(f"127.0.0.1:{traced.port}") as client:
            assert client.rank_ads("u6", ADS).experiment == "traced-shadow"
    finally:
        stub.Delete(models_pb2.DeleteExperimentRequest(name="traced-shadow"))
    root, children = _tree(spans.get_finished_spans())
    assert root.attributes["reachrank.experiment"] == "traced-shadow"
    names = [s.name for s in sorted(children, key=lambda s: s.start_time)]
    assert names == ["route", "features", "infer", "auction", "log", "shadow"]


def test_trailing_metadata_returns_the_servers_traceparent(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{traced.port}") as channel:
        stub = ranking_pb2_grpc.RankingStub(channel)
        _, call = stub.Recommend.with_call(
            ranking_pb2.RecommendRequest(user_id="u3", k=2),
            metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),),
        )
    trailing = dict(call.trailing_metadata())
    root, _ = _tree(spans.get_finished_spans())
    assert trailing["traceparent"] == (
        f"00-{CALLER_TRACE}-{format(root.context.span_id, '016x')}-01"
    )
    assert trailing["x-request-id"]  # the interceptor's own trailers are kept


def test_a_new_trace_starts_without_a_caller_context(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    with ReachRankClient(f"127.0.0.1:{traced.port}") as client:
        client.rank_ads("u4", ADS)
    root, _ = _tree(spans.get_finished_spans())
    assert root.parent is None


def test_a_refused_request_is_an_error_span_without_its_message(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    with ReachRankClient(f"127.0.0.1:{traced.port}") as client, pytest.raises(ReachRankError):
        client.recommend("u1", k=0)
    root, _ = _tree(spans.get_finished_spans())
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "INVALID_ARGUMENT"
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_score_and_kserve_infer_are_traced(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    inputs = ctr_inputs(traced.registry, rows=5)
    with ReachRankClient(f"127.0.0.1:{traced.port}") as client:
        client.score("ctr", inputs)
    root, children = _tree(spans.get_finished_spans())
    assert root.name == "reachrank.v1.Ranking/Score"
    assert [(s.name, s.attributes["reachrank.rows"]) for s in children] == [("infer", 5)]
    spans.clear()
    with open_stub(traced.port) as stub:
        stub.ModelInfer(raw_request("ctr", inputs))
    root, children = _tree(spans.get_finished_spans())
    assert root.name == "inference.GRPCInferenceService/ModelInfer"
    assert [s.name for s in children] == ["infer"]


def test_health_and_admin_calls_make_no_span(
    traced: RunningServer, spans: InMemorySpanExporter
) -> None:
    with ReachRankClient(f"127.0.0.1:{traced.port}") as client:
        client.health()
        client.models()
    assert spans.get_finished_spans() == ()


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver (the collector's TraceService), keeping what it gets."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_a_real_otlp_receiver(trained_repo: Path) -> None:
    receiver = _Receiver()
    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    running = start_server(
        Settings(repo=trained_repo, port=0, otlp_endpoint=f"http://127.0.0.1:{port}")
    )
    try:
        address = f"127.0.0.1:{running.port}"
        with ReachRankClient(address) as c, trace_context(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"):
            c.rank_ads("u5", ADS, request_id="rid-otlp")
        assert running.tracing is not None and running.tracing.flush()
        assert receiver.received.wait(30)
    finally:
        running.stop(0)
        collector.stop(0)
    exported = [
        (resource_spans.resource, span)
        for request in receiver.requests
        for resource_spans in request.resource_spans
        for scope in resource_spans.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in exported}
    assert {"reachrank.v1.Ranking/RankAds", "route", "features", "infer", "auction"} <= names
    resource, server_span = next((r, s) for r, s in exported if s.name.endswith("/RankAds"))
    assert server_span.trace_id.hex() == CALLER_TRACE
    assert server_span.parent_span_id.hex() == CALLER_SPAN
    attributes = {a.key: a.value for a in server_span.attributes}
    assert attributes["reachrank.request_id"].string_value == "rid-otlp"
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "reachrank"


def test_nothing_is_wrapped_while_no_server_traces(trained_repo: Path) -> None:
    """Off costs nothing per request: the stage functions are the plain ones, and an untraced
    server answers without a traceparent."""
    running = start_server(Settings(repo=trained_repo, port=0))
    try:
        assert running.tracing is None
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            _, call = ranking_pb2_grpc.RankingStub(channel).Recommend.with_call(
                ranking_pb2.RecommendRequest(user_id="u3", k=2)
            )
        assert "traceparent" not in dict(call.trailing_metadata())
    finally:
        running.stop(0)


def test_stages_are_wrapped_while_a_traced_server_runs_and_restored_after() -> None:
    from engine.tracing import _Instrumentation

    before = (engine.pipelines.gsp_auction, engine.servicer.route, vars(CTRModel)["features"])
    instrumentation = _Instrumentation()
    instrumentation.acquire()
    instrumentation.acquire()  # a second traced server in the process
    try:
        assert engine.pipelines.gsp_auction is not before[0]
        assert engine.servicer.route is not before[1]
        assert vars(CTRModel)["features"] is not before[2]
        instrumentation.release()
        assert engine.pipelines.gsp_auction is not before[0]  # one traced server still runs
    finally:
        instrumentation.release()
    after = (engine.pipelines.gsp_auction, engine.servicer.route, vars(CTRModel)["features"])
    assert all(a is b for a, b in zip(after, before, strict=True))
    assert len(STAGES) == len(instrumentation._originals) + len(STAGES)  # all restored


def test_sampling_follows_the_caller_else_the_ratio() -> None:
    rng = random.Random(3)
    yes, no = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    assert sampled(yes, 0.0, rng) and not sampled(no, 1.0, rng)
    assert sampled(None, 1.0, rng) and not sampled(None, 0.0, rng)
    assert sampled("garbage", 1.0, rng) and not sampled("00-zz", 0.0, rng)
    share = sum(sampled(None, 0.1, rng) for _ in range(10_000)) / 10_000
    assert 0.09 < share < 0.11
