"""Every acknowledged feedback event and experiment change is on disk before its
acknowledgement: a power cut at any acknowledgement (tests.engine.durability: only what was
fsynced, file and directory, survives) keeps everything acknowledged so far. A killed process
cannot show this (the kernel's page cache outlives it); this disk model can, in every fsync
mode, through rotation to new segments, Parquet conversion and deletion of converted ones."""

from __future__ import annotations

import io
import json
from pathlib import Path

import grpc
import polars as pl
import pytest
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc, models_pb2

import engine.experiment_file
import engine.feedback.files
import engine.feedback.log
import engine.feedback.segments
from clients import ReachRankClient
from clients.types import Experiment, Variant
from engine.experiment_file import ExperimentFile
from engine.experiments import ExperimentStore
from engine.feedback.log import FeedbackLog
from engine.feedback.records import scan
from engine.server import start_server
from engine.settings import Settings
from tests.engine.durability import Ack, PowerCutDisk
from tests.engine.feedback_helpers import event
from tests.threads import Workers

FSYNC_MODES = [0.0, 5.0]  # appenders lead the fsyncs; a flusher thread gathers them


def power_cut_disk(
    monkeypatch: pytest.MonkeyPatch, root: Path, *, forget_file_fsyncs: bool = False
) -> PowerCutDisk:
    """A new folder ``root`` on a disk model that every module writing the log or the
    experiments file goes through."""
    root.mkdir()
    disk = PowerCutDisk(root, forget_file_fsyncs=forget_file_fsyncs)
    for module in (
        engine.feedback.log,
        engine.feedback.files,
        engine.feedback.segments,
        engine.experiment_file,
    ):
        monkeypatch.setattr(module, "os", disk)
    return disk


def logged_users(survivors: dict[str, bytes]) -> set[str]:
    """User ids of the events a log directory holds after the power cut."""
    users: set[str] = set()
    for name, data in survivors.items():
        if name.startswith("wal-") and name.endswith(".log"):
            for payload in scan(data).payloads:
                users.add(feedback_pb2.FeedbackEvent.FromString(payload).user_id)
        elif name.startswith("parquet/events-") and name.endswith(".parquet") and data:
            # (a Parquet file never fsynced holds nothing after the cut: skipped)
            users.update(pl.read_parquet(io.BytesIO(data))["user_id"].to_list())
    return users


def lost_at_acks(acks: list[Ack]) -> list[tuple[int, list[str]]]:
    """For each acknowledgement: the events acknowledged by then that a power cut loses."""
    acked: set[str] = set()
    lost = []
    cache: dict[int, set[str]] = {}
    for i, ack in enumerate(acks):
        acked.update(ack.label)
        key = hash(tuple(sorted((k, hash(v)) for k, v in ack.survivors.items())))
        if key not in cache:
            cache[key] = logged_users(ack.survivors)
        missing = sorted(acked - cache[key])
        if missing:
            lost.append((i, missing))
    return lost


def append_from_threads(log: FeedbackLog, disk: PowerCutDisk, threads: int, calls: int) -> None:
    def appender(t: int) -> None:
        for c in range(calls):
            batch = [event(t * 10_000 + c * 10 + j, context={"pad": "x" * 40}) for j in range(3)]
            log.append(batch)
            disk.ack([e.user_id for e in batch])

    with Workers() as workers:
        for t in range(threads):
            workers.start(appender, t)


@pytest.mark.parametrize("interval_ms", FSYNC_MODES)
def test_every_acknowledged_event_survives_a_power_cut_at_any_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval_ms: float
) -> None:
    root = tmp_path / "feedback"
    disk = power_cut_disk(monkeypatch, root)
    # Small segments: appends cross many rotations, conversions and deletions.
    log = FeedbackLog(root, fsync_interval_ms=interval_ms, max_segment_bytes=2048)
    try:
        append_from_threads(log, disk, threads=4, calls=25)
    finally:
        log.close()
    stats = log.stats()  # after close: every sealed segment converted, however slow
    assert len(disk.acks) == 100
    assert stats.sealed_segments >= 3 and stats.converted_segments >= 1  # paths exercised
    assert lost_at_acks(disk.acks) == []
    assert ("dir", str(root / "parquet")) in disk.fsyncs  # conversions published durably
    # And after close everything is in durable Parquet, none of it left to a WAL.
    final = disk.after_power_cut()
    assert logged_users(final) == {u for ack in disk.acks for u in ack.label}
    assert not [name for name in final if name.startswith("wal-") and final[name]]


def test_the_check_catches_a_log_that_skips_an_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative controls: the same run loses acknowledged events when the directory entry of
    a new segment is never fsynced, or when file fsyncs make nothing durable."""
    root = tmp_path / "no-dir-fsync"
    disk = power_cut_disk(monkeypatch, root)
    real_fsync_dir = engine.feedback.files.fsync_dir
    created = [0]

    def fsync_dir_once(directory: Path) -> None:  # the first segment's entry only
        created[0] += 1
        if created[0] == 1:
            real_fsync_dir(directory)

    monkeypatch.setattr(engine.feedback.log, "fsync_dir", fsync_dir_once)
    with FeedbackLog(root, max_segment_bytes=2048) as log:
        append_from_threads(log, disk, threads=2, calls=20)
    assert lost_at_acks(disk.acks), "a segment whose entry was never fsynced went unnoticed"

    root = tmp_path / "lying-disk"
    disk = power_cut_disk(monkeypatch, root, forget_file_fsyncs=True)
    monkeypatch.setattr(engine.feedback.log, "fsync_dir", real_fsync_dir)
    with FeedbackLog(root) as log:
        append_from_threads(log, disk, threads=2, calls=5)
    assert lost_at_acks(disk.acks)


@pytest.mark.parametrize("interval_ms", FSYNC_MODES)
def test_log_events_rpc_acknowledges_only_durable_events(
    trained_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interval_ms: float
) -> None:
    root = tmp_path / "feedback"
    disk = power_cut_disk(monkeypatch, root)
    settings = Settings(
        repo=trained_repo,
        port=0,
        feedback_dir=root,
        feedback_fsync_interval_ms=interval_ms,
        feedback_segment_bytes=4096,
    )
    running = start_server(settings)
    try:

        def sender(t: int) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = feedback_pb2_grpc.FeedbackStub(channel)
                for c in range(15):
                    batch = [
                        event(t * 10_000 + c * 10 + j, context={"pad": "y" * 60}) for j in range(4)
                    ]
                    request = feedback_pb2.LogEventsRequest(events=batch)
                    assert stub.LogEvents(request, timeout=120).accepted == len(batch)
                    disk.ack([e.user_id for e in batch])  # the reply is the acknowledgement

        with Workers() as workers:
            for t in range(3):
                workers.start(sender, t)
    finally:
        running.stop(0)
    assert len(disk.acks) == 45
    assert lost_at_acks(disk.acks) == []
    assert any(name.startswith("parquet/") for ack in disk.acks for name in ack.survivors)


def experiment_names(survivors: dict[str, bytes], name: str) -> list[str]:
    data = survivors.get(name, b"")
    return [e["name"] for e in json.loads(data)["experiments"]] if data else []


def test_experiment_changes_are_durable_when_the_rpc_answers(
    trained_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "state"
    disk = power_cut_disk(monkeypatch, root)
    settings = Settings(
        repo=trained_repo,
        port=0,
        experiments_file=root / "experiments.json",
        experiments_poll_interval_s=0,
    )
    running = start_server(settings)
    expected: list[str] = []
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            for i in range(4):
                name = f"exp-{i}"
                client.set_experiment(Experiment(name, (Variant("a", 1.0), Variant("b", 1.0))))
                expected.append(name)
                disk.ack(list(expected))
            client.delete_experiment("exp-1")
            expected.remove("exp-1")
            disk.ack(list(expected))
    finally:
        running.stop(0)
    for ack in disk.acks:
        assert experiment_names(ack.survivors, "experiments.json") == ack.label


def test_the_experiment_check_catches_a_missing_directory_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: without the directory fsync after the rename, the file's first
    version is not durable when ``write`` returns."""
    root = tmp_path / "state"
    disk = power_cut_disk(monkeypatch, root)

    real_fsync = disk.fsync

    def file_fsyncs_only(fd: int) -> None:
        if not Path(f"/proc/self/fd/{fd}").resolve().is_dir():
            real_fsync(fd)

    monkeypatch.setattr(disk, "fsync", file_fsyncs_only)
    store = ExperimentStore(backing=ExperimentFile(root / "experiments.json"))
    variants = [models_pb2.Variant(name="a", weight=1.0)]
    store.set(models_pb2.Experiment(name="x", rpcs=["recommend"], enabled=True, variants=variants))
    disk.ack(["x"])
    assert experiment_names(disk.acks[0].survivors, "experiments.json") == []
