"""Fuzzing a real server: generated and mutated requests for every RPC, and raw garbage bytes
at every unary method path. Only documented status codes may come back (never UNKNOWN or
INTERNAL), and the server must still answer a valid request afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reachrank.kserve.v2 import grpc_service_pb2 as kserve_pb
from reachrank.v1 import feedback_pb2, models_pb2, ranking_pb2, ranking_pb2_grpc

from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.rpc_helpers import raw_call, unary_paths

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIMEOUT = 10.0

# Mostly ids the repository knows, so generated requests get past the lookups too.
USERS = ["u0", "u1", "u42", "u299"]
ITEMS = ["i0", "i1", "i7", "i119"]
MODELS = ["ctr", "ctr-fm", "ctr-dcn", "ctr-deepfm", "retrieval", "retrieval-mf", "profiles"]
ids = st.one_of(st.sampled_from(USERS + ITEMS), st.text(max_size=12))
int32 = st.one_of(st.integers(-3, 300), st.integers(-(2**31), 2**31 - 1))
int64 = st.one_of(st.integers(-3, 5), st.integers(-(2**63), 2**63 - 1))
doubles = st.one_of(st.floats(-10, 1000), st.floats())
floats32 = st.one_of(st.floats(0, 1, width=32), st.floats(width=32))
strings = st.text(max_size=12)
context = st.dictionaries(
    st.sampled_from(["position", "device", "hour", "page"]) | strings,
    st.sampled_from(["1", "3", "mobile", "", "nan", "-1"]) | strings,
    max_size=4,
)


@pytest.fixture(scope="module")
def server(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        Settings(
            repo=trained_repo,
            host="127.0.0.1",
            port=0,
            grace_period_s=0.5,
            max_ads=64,
            max_k=200,
            max_audience=500,
            max_score_rows=256,
            feedback_dir=tmp_path_factory.mktemp("feedback"),
            feedback_max_events=32,
        )
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


def check(channel: grpc.Channel, path: str, request: Any) -> grpc.StatusCode:
    code = raw_call(channel, path, request.SerializeToString())
    assert code in DOCUMENTED, (path, code, request)
    return code


def still_serves(channel: grpc.Channel) -> None:
    stub = ranking_pb2_grpc.RankingStub(channel)
    response = stub.Recommend(ranking_pb2.RecommendRequest(user_id="u1", k=3), timeout=TIMEOUT)
    assert len(response.items) == 3
    ads = [ranking_pb2.Ad(ad_id=f"a{i}", bid=1.0 + i) for i in range(3)]
    ranked = stub.RankAds(
        ranking_pb2.RankAdsRequest(user_id="u1", ads=ads, slots=1), timeout=TIMEOUT
    )
    assert [a.slot for a in ranked.ads] == [1, 0, 0]


filters = st.builds(
    ranking_pb2.Filters,
    categories=st.lists(st.sampled_from(["sports", "grocery", "toys"]) | strings, max_size=3),
    min_price=st.none() | doubles,
    max_price=st.none() | doubles,
)
recommend = st.builds(
    ranking_pb2.RecommendRequest,
    user_id=ids,
    k=int32,
    context=context,
    filters=filters,
    exclude=st.lists(ids, max_size=4),
    diversity=st.builds(ranking_pb2.Diversity, max_per_category=int32, mmr_lambda=floats32),
)
ad = st.builds(
    ranking_pb2.Ad,
    ad_id=st.sampled_from(["a1", "a2", "a3"]) | strings,
    bid=doubles,
    features=context,
)
rank_ads = st.builds(
    ranking_pb2.RankAdsRequest,
    user_id=ids,
    context=context,
    ads=st.lists(ad, max_size=70),
    slots=int32,
    reserve_price=doubles,
)
similar = st.builds(ranking_pb2.SimilarItemsRequest, item_id=ids, k=int32, filters=filters)
audience = st.builds(
    ranking_pb2.AudienceRequest,
    item_ids=st.lists(ids, max_size=4),
    n=int32,
    segments=st.lists(st.sampled_from(["champions", "cluster:1", "cluster:x"]) | strings),
    include_consumers=st.booleans(),
)
profile = st.builds(ranking_pb2.ProfileRequest, user_id=ids)


@st.composite
def tensors(draw: st.DrawFn) -> ranking_pb2.Tensor:
    dtype = draw(st.sampled_from(["float32", "float64", "int32", "int64", "bool", "", "<f4"]))
    shape = draw(st.lists(st.integers(-2, 8) | st.integers(-(2**62), 2**62), max_size=3))
    itemsize = {"float32": 4, "int32": 4, "float64": 8, "int64": 8}.get(dtype, 1)
    size = int(np.prod(shape)) * itemsize if shape and all(0 <= d <= 8 for d in shape) else 4
    consistent = draw(st.booleans())
    data = draw(st.binary(min_size=size, max_size=size) if consistent else st.binary(max_size=64))
    return ranking_pb2.Tensor(dtype=dtype, shape=shape, data=data)


score = st.builds(
    ranking_pb2.ScoreRequest,
    model=st.sampled_from(MODELS) | strings,
    version=int64,
    inputs=st.dictionaries(
        st.sampled_from(["cat", "num", "user", "query", "x"]) | strings, tensors(), max_size=3
    ),
)
infer_contents = st.builds(
    kserve_pb.InferTensorContents,
    bool_contents=st.lists(st.booleans(), max_size=8),
    int_contents=st.lists(int32, max_size=8),
    int64_contents=st.lists(int64, max_size=8),
    fp32_contents=st.lists(floats32, max_size=8),
    fp64_contents=st.lists(doubles, max_size=8),
    bytes_contents=st.lists(st.binary(max_size=8), max_size=4),
)
infer_input = st.builds(
    kserve_pb.ModelInferRequest.InferInputTensor,
    name=st.sampled_from(["cat", "num", "user_index", "item_index"]) | strings,
    datatype=st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES", "FP16"]) | strings,
    shape=st.lists(st.integers(-2, 8) | st.integers(-(2**62), 2**62), max_size=3),
    contents=infer_contents,
)
model_infer = st.builds(
    kserve_pb.ModelInferRequest,
    model_name=st.sampled_from(MODELS) | strings,
    model_version=st.sampled_from(["", "1", "2", "-1", "x"]),
    inputs=st.lists(infer_input, max_size=3),
    outputs=st.lists(
        st.builds(
            kserve_pb.ModelInferRequest.InferRequestedOutputTensor,
            name=st.sampled_from(["pctr", "scores", "logits"]) | strings,
        ),
        max_size=2,
    ),
    raw_input_contents=st.lists(st.binary(max_size=64), max_size=3),
)


def test_generated_model_infer(channel: grpc.Channel) -> None:
    codes: set[grpc.StatusCode] = set()

    @FUZZ
    @given(request=model_infer)
    def run(request: kserve_pb.ModelInferRequest) -> None:
        codes.add(check(channel, "/inference.GRPCInferenceService/ModelInfer", request))

    run()
    assert grpc.StatusCode.INVALID_ARGUMENT in codes
    still_serves(channel)


RANKING = {
    "Recommend": recommend,
    "RankAds": rank_ads,
    "Score": score,
    "SimilarItems": similar,
    "Audience": audience,
    "Profile": profile,
}


def test_score_on_a_model_without_a_graph(channel: grpc.Channel) -> None:
    # Found by the fuzzer: the profiles bundle has no ONNX graph, and Score answered INTERNAL.
    request = ranking_pb2.ScoreRequest(model="profiles")
    with pytest.raises(grpc.RpcError) as error:
        ranking_pb2_grpc.RankingStub(channel).Score(request, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "'profiles' has no ONNX graph" in error.value.details()


def test_undecodable_request_is_invalid_argument(channel: grpc.Channel) -> None:
    # Found by the fuzzer: gRPC itself answers INTERNAL when a request does not decode.
    call = channel.unary_unary("/reachrank.v1.Ranking/Recommend")
    with pytest.raises(grpc.RpcError) as error:
        call(b"\n", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid reachrank.v1.RecommendRequest" in error.value.details()


@pytest.mark.parametrize("name", ["../ctr", "/etc", "ctr/1", ".."])
def test_load_refuses_a_path_as_model_name(channel: grpc.Channel, name: str) -> None:
    request = models_pb2.LoadModelRequest(name=name)
    with pytest.raises(grpc.RpcError) as error:
        channel.unary_unary(
            "/reachrank.v1.ModelService/Load",
            request_serializer=models_pb2.LoadModelRequest.SerializeToString,
        )(request, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a model name" in error.value.details()


@pytest.mark.parametrize("rpc", sorted(RANKING))
def test_generated_ranking_requests(channel: grpc.Channel, rpc: str) -> None:
    codes: set[grpc.StatusCode] = set()

    @FUZZ
    @given(request=RANKING[rpc])
    def run(request: Any) -> None:
        codes.add(check(channel, f"/reachrank.v1.Ranking/{rpc}", request))

    run()
    assert grpc.StatusCode.INVALID_ARGUMENT in codes or grpc.StatusCode.NOT_FOUND in codes
    still_serves(channel)


def test_generated_model_management(channel: grpc.Channel) -> None:
    # Load may pin or reload a served model; Unload only names that serve nothing, so the
    # final check still has its models.
    not_served = strings.filter(lambda name: name not in MODELS and name != "ctr")
    requests = st.one_of(
        st.builds(
            models_pb2.LoadModelRequest, name=st.sampled_from(MODELS) | strings, version=int64
        ).map(lambda r: ("/reachrank.v1.ModelService/Load", r)),
        st.builds(models_pb2.UnloadModelRequest, name=not_served).map(
            lambda r: ("/reachrank.v1.ModelService/Unload", r)
        ),
        st.builds(
            kserve_pb.RepositoryModelLoadRequest, model_name=st.sampled_from(MODELS) | strings
        ).map(lambda r: ("/inference.GRPCInferenceService/RepositoryModelLoad", r)),
    )

    @settings(FUZZ, max_examples=40)
    @given(call=requests)
    def run(call: tuple[str, Any]) -> None:
        check(channel, *call)

    run()
    for model in ("ctr", "retrieval"):  # back to the versions their policies choose
        check(channel, "/reachrank.v1.ModelService/Load", models_pb2.LoadModelRequest(name=model))
    still_serves(channel)


def test_generated_experiments(channel: grpc.Channel) -> None:
    variant = st.builds(
        models_pb2.Variant,
        name=st.sampled_from(["a", "b"]) | strings,
        weight=doubles,
        ctr_model=st.sampled_from(["", "ctr", "ctr-fm", "retrieval"]) | strings,
        ctr_version=st.integers(-1, 3),
        retrieval_model=st.sampled_from(["", "retrieval", "ctr"]) | strings,
        retrieval_version=st.integers(-1, 3),
    )
    experiment = st.builds(
        models_pb2.Experiment,
        name=st.sampled_from(["fuzz", ""]) | strings,
        salt=strings,
        rpcs=st.lists(st.sampled_from(["recommend", "rank_ads", "score"]) | strings, max_size=3),
        variants=st.lists(variant, max_size=3),
        segments=st.lists(st.sampled_from(["champions", "cluster:2"]) | strings, max_size=2),
        enabled=st.booleans(),
    )

    @settings(FUZZ, max_examples=40)
    @given(request=experiment)
    def run(request: models_pb2.Experiment) -> None:
        if check(channel, "/reachrank.v1.Experiments/Set", request) == grpc.StatusCode.OK:
            # While it runs, its users are still answered with documented codes.
            check(
                channel,
                "/reachrank.v1.Ranking/Recommend",
                ranking_pb2.RecommendRequest(user_id="u1", k=3),
            )
            delete = models_pb2.DeleteExperimentRequest(name=request.name)
            assert check(channel, "/reachrank.v1.Experiments/Delete", delete) == grpc.StatusCode.OK

    run()
    still_serves(channel)


def test_generated_feedback(channel: grpc.Channel) -> None:
    event = st.builds(
        feedback_pb2.FeedbackEvent,
        user_id=ids,
        item_id=ids,
        event=st.sampled_from(["impression", "click", "purchase"]) | strings,
        ts_unix_ms=int64,
        position=int32,
        price=doubles,
        value=doubles,
        context=context,
    )

    @settings(FUZZ, max_examples=40)
    @given(request=st.builds(feedback_pb2.LogEventsRequest, events=st.lists(event, max_size=40)))
    def run(request: feedback_pb2.LogEventsRequest) -> None:
        check(channel, "/reachrank.v1.Feedback/LogEvents", request)

    run()
    still_serves(channel)


VALID: dict[str, bytes] = {
    "/reachrank.v1.Ranking/Recommend": ranking_pb2.RecommendRequest(
        user_id="u1", k=5, context={"position": "1"}, exclude=["i1"]
    ).SerializeToString(),
    "/reachrank.v1.Ranking/RankAds": ranking_pb2.RankAdsRequest(
        user_id="u1",
        ads=[ranking_pb2.Ad(ad_id=f"a{i}", bid=1.0, features={"f": "x"}) for i in range(3)],
        slots=2,
    ).SerializeToString(),
    "/reachrank.v1.Ranking/Score": ranking_pb2.ScoreRequest(
        model="ctr",
        inputs={"x": ranking_pb2.Tensor(dtype="float32", shape=[1, 2], data=bytes(8))},
    ).SerializeToString(),
    "/reachrank.v1.Ranking/SimilarItems": ranking_pb2.SimilarItemsRequest(
        item_id="i1", k=3, filters=ranking_pb2.Filters(min_price=1.0)
    ).SerializeToString(),
    "/reachrank.v1.Ranking/Audience": ranking_pb2.AudienceRequest(
        item_ids=["i1", "i2"], n=5, segments=["champions"]
    ).SerializeToString(),
    "/reachrank.v1.Ranking/Profile": ranking_pb2.ProfileRequest(user_id="u1").SerializeToString(),
    "/reachrank.v1.Feedback/LogEvents": feedback_pb2.LogEventsRequest(
        events=[feedback_pb2.FeedbackEvent(user_id="u1", item_id="i1", event="click")]
    ).SerializeToString(),
    "/inference.GRPCInferenceService/ModelInfer": kserve_pb.ModelInferRequest(
        model_name="ctr",
        inputs=[
            kserve_pb.ModelInferRequest.InferInputTensor(
                name="num",
                datatype="FP32",
                shape=[1, 1],
                contents=kserve_pb.InferTensorContents(fp32_contents=[0.5]),
            )
        ],
    ).SerializeToString(),
}


@st.composite
def mutated(draw: st.DrawFn, payload: bytes) -> bytes:
    """`payload` with a few bytes flipped, inserted, deleted, or cut short."""
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "truncate":
            data = data[:at]
    return bytes(data)


@pytest.mark.parametrize("path", sorted(VALID))
def test_mutated_requests(channel: grpc.Channel, path: str) -> None:
    assert raw_call(channel, path, VALID[path]) in DOCUMENTED

    @FUZZ
    @given(payload=mutated(VALID[path]))
    def run(payload: bytes) -> None:
        code = raw_call(channel, path, payload)
        assert code in DOCUMENTED, (path, code, payload)

    run()
    still_serves(channel)


# KServe RPCs ReachRank does not offer (shared memory, trace and log settings) answer
# UNIMPLEMENTED by design.
NOT_OFFERED_PREFIXES = (
    "/grpc.health.v1.Health/List",  # newer than the health servicer grpcio ships
    "/inference.GRPCInferenceService/SystemSharedMemory",
    "/inference.GRPCInferenceService/CudaSharedMemory",
    "/inference.GRPCInferenceService/Trace",
    "/inference.GRPCInferenceService/Log",
)


def test_garbage_bytes_at_every_method(channel: grpc.Channel) -> None:
    # Garbage that happens to parse could name a served model: leave the removals out.
    paths = [p for p in unary_paths() if not p.endswith(("Unload", "/Delete"))]
    assert len(paths) > 20

    @settings(FUZZ, max_examples=100)
    @given(path=st.sampled_from(paths), payload=st.binary(max_size=256))
    def run(path: str, payload: bytes) -> None:
        allowed = DOCUMENTED | (
            {grpc.StatusCode.UNIMPLEMENTED} if path.startswith(NOT_OFFERED_PREFIXES) else set()
        )
        code = raw_call(channel, path, payload)
        assert code in allowed, (path, code, payload)

    run()
    still_serves(channel)


def test_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    assert raw_call(channel, "/reachrank.v1.Ranking/Nope", b"") == grpc.StatusCode.UNIMPLEMENTED
    still_serves(channel)
