"""Feedback and Experiments services on a real in-process server: validation errors name the
field, acknowledged events reach Parquet on stop, experiments round-trip, reflection lists both."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc, models_pb2, models_pb2_grpc

from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.feedback_helpers import event, parquet_events


@pytest.fixture()
def feedback_server(trained_repo: Path, tmp_path: Path) -> Iterator[RunningServer]:
    experiments = tmp_path / "experiments.json"
    experiments.write_text(
        json.dumps(
            {
                "experiments": [
                    {
                        "name": "from-file",
                        "rpcs": ["recommend"],
                        "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}],
                        "enabled": True,
                    }
                ]
            }
        )
    )
    settings = Settings(
        repo=trained_repo,
        host="127.0.0.1",
        port=0,
        feedback_dir=tmp_path / "feedback",
        feedback_max_events=10,
        experiments_file=experiments,
    )
    running = start_server(settings)
    yield running
    running.stop(0)


@pytest.fixture()
def channel(feedback_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{feedback_server.port}") as ch:
        yield ch


def test_log_events_acknowledges_and_fills_the_time(
    feedback_server: RunningServer, channel: grpc.Channel
) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    events = [event(1, "impression", ts_unix_ms=0), event(2, "purchase", value=5.0)]
    reply = stub.LogEvents(feedback_pb2.LogEventsRequest(events=events), timeout=10)
    assert reply.accepted == 2
    assert stub.LogEvents(feedback_pb2.LogEventsRequest(), timeout=10).accepted == 0
    feedback_server.stop(1.0)  # drains, then flushes the log into Parquet
    frame = parquet_events(feedback_server.settings.feedback_dir).sort("user_id")
    assert frame["user_id"].to_list() == ["u1", "u2"]
    stamped, given = frame["ts"].dt.epoch("ms").to_list()
    assert stamped > 1_700_000_000_000 and given == 1_700_000_000_000


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"user_id": ""}, "events[1].user_id"),
        ({"item_id": ""}, "events[1].item_id"),
        ({"event": "rating"}, "events[1].event"),
        ({"price": float("nan")}, "events[1].price"),
        ({"value": -1.0}, "events[1].value"),
        ({"value": float("inf")}, "events[1].value"),
        ({"position": -2}, "events[1].position"),
        ({"context": {"user_id": "x"}}, "events[1].context['user_id']"),
    ],
)
def test_invalid_events_are_refused_naming_the_field(
    channel: grpc.Channel, bad: dict, field: str
) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    request = feedback_pb2.LogEventsRequest(events=[event(0), event(1, **bad)])
    with pytest.raises(grpc.RpcError) as err:
        stub.LogEvents(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_too_many_events_in_one_call(channel: grpc.Channel) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.LogEvents(feedback_pb2.LogEventsRequest(events=[event(i) for i in range(11)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 10" in err.value.details()


def test_experiments_set_list_delete(channel: grpc.Channel) -> None:
    stub = models_pb2_grpc.ExperimentsStub(channel)
    names = [e.name for e in stub.List(models_pb2.ListExperimentsRequest()).experiments]
    assert names == ["from-file"]
    new = models_pb2.Experiment(
        name="ads",
        rpcs=["rank_ads"],
        variants=[models_pb2.Variant(name="control", weight=9, ctr_version=1)],
        enabled=True,
    )
    assert stub.Set(new) == new
    listed = stub.List(models_pb2.ListExperimentsRequest()).experiments
    assert [e.name for e in listed] == ["ads", "from-file"] and listed[0] == new
    stub.Delete(models_pb2.DeleteExperimentRequest(name="ads"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Delete(models_pb2.DeleteExperimentRequest(name="ads"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bad = models_pb2.Experiment(name="x", rpcs=["score"], variants=[new.variants[0]])
    with pytest.raises(grpc.RpcError) as err:
        stub.Set(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rpcs[0]" in err.value.details()


def test_reflection_lists_feedback_and_experiments(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = {s.name for a in answers for s in a.list_services_response.service}
    assert {"reachrank.v1.Feedback", "reachrank.v1.Experiments"} <= services


def test_disk_full_answers_resource_exhausted_and_keeps_serving(
    feedback_server: RunningServer, channel: grpc.Channel, monkeypatch
) -> None:
    stub = feedback_pb2_grpc.FeedbackStub(channel)
    stub.LogEvents(feedback_pb2.LogEventsRequest(events=[event(1)]), timeout=10)
    directory = str(feedback_server.settings.feedback_dir)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(directory):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(grpc.RpcError) as err:
        stub.LogEvents(feedback_pb2.LogEventsRequest(events=[event(2)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk full" in err.value.details()
    monkeypatch.undo()
    stub.LogEvents(feedback_pb2.LogEventsRequest(events=[event(3)]), timeout=10)
    feedback_server.stop(1.0)
    assert sorted(parquet_events(feedback_server.settings.feedback_dir)["user_id"]) == ["u1", "u3"]
