"""The experiments file as the shared source of truth: RPC changes are written through, merged
across processes under a lock, adopted by every process's poll, survive restarts; a bad edit
or an experiment a process cannot prepare never replaces what it serves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from reachrank.v1 import models_pb2

from clients import ReachRankClient
from clients.types import Experiment, Variant
from engine.errors import FailedPrecondition, NotFound
from engine.experiment_file import ExperimentFile
from engine.experiments import ExperimentStore
from engine.server import start_server
from engine.settings import Settings
from tests.threads import Workers


def experiment(name: str, weights=(1.0, 1.0)) -> models_pb2.Experiment:
    variants = [models_pb2.Variant(name=f"v{i}", weight=w) for i, w in enumerate(weights)]
    return models_pb2.Experiment(name=name, rpcs=["recommend"], variants=variants, enabled=True)


def names(store: ExperimentStore) -> list[str]:
    return [e.name for e in store.list()]


def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    a, b = (
        ExperimentStore(backing=ExperimentFile(path)),
        ExperimentStore(backing=ExperimentFile(path)),
    )
    a.set(experiment("first"))
    b.set(experiment("second"))  # merged with what a wrote, not overwriting it
    assert names(b) == ["first", "second"]
    assert [e["name"] for e in json.loads(path.read_text())["experiments"]] == ["first", "second"]
    assert names(a) == ["first"] and a.refresh() and names(a) == ["first", "second"]
    assert not a.refresh()  # nothing changed since
    a.delete("first")
    assert b.refresh() and names(b) == ["second"]
    with pytest.raises(NotFound):
        b.delete("first")
    # A restart reads the file.
    assert names(ExperimentStore(ExperimentFile(path).read())) == ["second"]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    stores = [ExperimentStore(backing=ExperimentFile(path)) for _ in range(3)]

    def writer(store: ExperimentStore, i: int) -> None:
        for j in range(15):
            store.set(experiment(f"s{i}-{j}"))

    with Workers() as workers:
        for i, store in enumerate(stores):
            workers.start(writer, store, i)
    assert len(json.loads(path.read_text())["experiments"]) == 45
    for s in stores:
        s.refresh()
        assert len(s.list()) == 45


def test_bad_edits_and_unpreparable_experiments_are_not_adopted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "experiments.json"
    refused = {"needs-v9"}

    def prepare(e: models_pb2.Experiment) -> None:
        if e.name in refused:
            raise FailedPrecondition(f"variants[0].ctr_model: cannot load version 9 of {e.name}")

    writer = ExperimentStore(backing=ExperimentFile(path))
    reader = ExperimentStore(backing=ExperimentFile(path), prepare=prepare)
    writer.set(experiment("ok"))
    writer.set(experiment("needs-v9"))
    with caplog.at_level("WARNING", logger="engine.experiments"):
        assert reader.refresh()
    assert names(reader) == ["ok"] and "'needs-v9' not adopted" in caplog.text
    path.write_text("{not json")  # a broken edit (its size alone changes the stamp)
    assert not reader.refresh()
    assert names(reader) == ["ok"] and "experiments file not adopted" in caplog.text


def test_rpc_changes_reach_other_workers_and_survive_a_restart(
    tmp_path: Path, trained_repo: Path
) -> None:
    path = tmp_path / "experiments.json"  # does not exist yet
    settings = Settings(
        repo=trained_repo, port=0, experiments_file=path, experiments_poll_interval_s=0.05
    )
    one, two = start_server(settings), start_server(settings)  # like two --workers processes
    try:
        with ReachRankClient(f"127.0.0.1:{one.port}") as client:
            client.set_experiment(
                Experiment("ranker-v2", (Variant("control", 1.0), Variant("v2", 1.0)))
            )
        assert path.exists()
        with ReachRankClient(f"127.0.0.1:{two.port}") as client:
            give_up = time.monotonic() + 120  # deadline-bounded: the other's poll adopts it
            while not client.experiments() and time.monotonic() < give_up:
                time.sleep(0.05)
            assert [e.name for e in client.experiments()] == ["ranker-v2"]
            assert client.recommend("u1", k=3).experiment == "ranker-v2"
    finally:
        one.stop(0)
        two.stop(0)
    restarted = start_server(settings)
    try:
        with ReachRankClient(f"127.0.0.1:{restarted.port}") as client:
            assert [e.name for e in client.experiments()] == ["ranker-v2"]
            client.delete_experiment("ranker-v2")
            assert client.experiments() == []
    finally:
        restarted.stop(0)
    assert json.loads(path.read_text()) == {"experiments": []}
