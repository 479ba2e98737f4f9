"""The decision log's durability contract (engine.decisions.log): every decision it counts as
durable survives a power cut (tests.engine.durability: only what was fsynced survives), through
segment rotation and Parquet conversion; requests never wait for the disk, and a writer that
falls behind bounds what a crash can lose by dropping (and counting) decisions instead."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from reachrank.v1 import decisions_pb2

import engine.feedback.files
import engine.feedback.log
import engine.feedback.segments
from engine.decisions.draft import DecisionDraft
from engine.decisions.log import DecisionLog
from engine.feedback.records import scan
from tests.engine.durability import PowerCutDisk


def draft(i: int) -> DecisionDraft:
    d = DecisionDraft("rank_ads", None, np.random.default_rng(i), logged=True)
    d.ranked([f"ad{i}", f"ad{i + 1}"], None, np.array([0.2, 0.1]), np.array([0]))
    return d


def logged_users(survivors: dict[str, bytes]) -> set[str]:
    users: set[str] = set()
    for name, data in survivors.items():
        if name.startswith("wal-") and name.endswith(".log"):
            users.update(decisions_pb2.Decision.FromString(p).user_id for p in scan(data).payloads)
        elif name.startswith("parquet/") and name.endswith(".parquet") and data:
            users.update(pl.read_parquet(io.BytesIO(data))["user_id"].to_list())
    return users


def run_with_acks(monkeypatch: pytest.MonkeyPatch, root: Path, forget: bool) -> list[str]:
    """Log 120 decisions, acknowledging every tenth once counted durable; what a power cut
    at any acknowledgement loses of what was acknowledged by then."""
    root.mkdir()
    disk = PowerCutDisk(root, forget_file_fsyncs=forget)
    for module in (engine.feedback.log, engine.feedback.files, engine.feedback.segments):
        monkeypatch.setattr(module, "os", disk)
    log = DecisionLog(
        root, sample_rates={"rank_ads": 1.0}, flush_interval_ms=1.0, max_segment_bytes=2048
    )
    for i in range(120):
        seq = log.submit(draft(i), f"u{i}", {}, None, [])
        assert seq is not None
        if i % 10 == 9:
            assert log.wait_durable(seq, timeout=30)
            disk.ack([f"u{j}" for j in range(i + 1)])
    log.close()
    assert log.wal.stats().converted_segments > 1  # rotation and Parquet were exercised
    lost: list[str] = []
    for ack in disk.acks:
        lost.extend(sorted(set(ack.label) - logged_users(ack.survivors)))
    return lost


def test_decisions_counted_durable_survive_a_power_cut(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert run_with_acks(monkeypatch, tmp_path / "log", forget=False) == []


def test_the_check_sees_a_disk_that_loses_fsynced_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert run_with_acks(monkeypatch, tmp_path / "log", forget=True)


def test_a_stalled_writer_drops_decisions_beyond_the_bound_and_never_blocks(
    tmp_path: Path,
) -> None:
    log = DecisionLog(tmp_path, sample_rates={"rank_ads": 1.0}, max_pending=20)
    entered, release = threading.Event(), threading.Event()
    append = log.wal.append_payloads

    def stalled(payloads: list[bytes]) -> None:
        entered.set()
        release.wait()
        append(payloads)

    log.wal.append_payloads = stalled  # type: ignore[method-assign]
    first = log.submit(draft(0), "u0", {}, None, [])
    assert first is not None and log.wait_durable(first, timeout=0) is False
    assert entered.wait(30)
    # The writer is stuck in the disk: 20 more are queued, the next 5 dropped at once.
    accepted = [log.submit(draft(i), f"u{i}", {}, None, []) for i in range(1, 26)]
    assert sum(s is not None for s in accepted) == 20
    stats = log.stats()
    assert stats.dropped == 5
    # A crash now would lose the queued decisions and the batch in the disk: the stated bound.
    assert stats.submitted - stats.durable == 20 + 1
    release.set()
    last = max(s for s in accepted if s is not None)
    assert log.wait_durable(last, timeout=30)
    log.close()
    frame = pl.read_parquet(tmp_path / "parquet" / "*.parquet")
    assert frame["user_id"].n_unique() == 21
