"""The feedback log on its own: append and reopen, crash recovery, rotation into Parquet the
trainer reads, group commit, and disk errors."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import polars as pl
import pytest

from engine.feedback import FeedbackLog, LogFull, LogUnavailable
from engine.feedback.records import frame_all, scan
from engine.feedback.segments import segment_path, segments
from tests.engine.feedback_helpers import event, logged_user_ids, parquet_events, wal_user_ids
from tests.threads import Workers


def _payloads(ids: range) -> list[bytes]:
    return [event(i).SerializeToString() for i in ids]


def _fails_on(directory: Path, real, error: int):
    """Wrap os.write/os.fsync so they fail with ``error`` only on files inside ``directory``."""

    def wrapper(fd: int, *args: object):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith(str(directory)):
            raise OSError(error, os.strerror(error))
        return real(fd, *args)

    return wrapper


def test_append_close_reopen_keeps_every_event(tmp_path: Path) -> None:
    with FeedbackLog(tmp_path) as log:
        log.append([event(i) for i in range(5)])
        log.append([event(i) for i in range(5, 8)])
    with FeedbackLog(tmp_path) as log:
        assert log.recovery.records == 0  # a clean close left everything in Parquet
        log.append([event(8)])
    assert sorted(logged_user_ids(tmp_path)) == sorted(f"u{i}" for i in range(9))
    assert segments(tmp_path) == {}


def test_unclosed_segment_is_recovered_and_converted_on_open(tmp_path: Path) -> None:
    # What a killed process leaves: a segment with whole records, never sealed.
    segment_path(tmp_path, 1).write_bytes(frame_all(_payloads(range(4))))
    with FeedbackLog(tmp_path) as log:
        assert log.recovery.records == 4 and log.recovery.problems == []
    assert sorted(parquet_events(tmp_path)["user_id"]) == [f"u{i}" for i in range(4)]


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_truncated_to_the_last_whole_record(tmp_path: Path, cut: int) -> None:
    whole = frame_all(_payloads(range(3)))
    torn = frame_all(_payloads(range(3, 4)))[:cut]  # a crash in the middle of the last append
    segment_path(tmp_path, 1).write_bytes(whole + torn)
    with FeedbackLog(tmp_path) as log:
        assert log.recovery.records == 3
        assert log.recovery.truncated_bytes == cut
        log.append([event(10)])
    assert sorted(logged_user_ids(tmp_path)) == ["u0", "u1", "u10", "u2"]
    assert (tmp_path / "corrupt" / f"wal-{1:012d}.log.{len(whole)}").read_bytes() == torn


def test_zero_filled_tail_is_not_a_record(tmp_path: Path) -> None:
    segment_path(tmp_path, 1).write_bytes(frame_all(_payloads(range(2))) + bytes(64))
    with FeedbackLog(tmp_path) as log:
        assert log.recovery.records == 2 and log.recovery.truncated_bytes == 64


def test_corrupt_crc_stops_replay_of_that_segment_at_the_last_good_record(
    tmp_path: Path,
) -> None:
    data = bytearray(frame_all(_payloads(range(5))))
    record = len(frame_all(_payloads(range(1))))
    data[2 * record + 12] ^= 0xFF  # a flipped bit inside the third record's payload
    segment_path(tmp_path, 1).write_bytes(bytes(data))
    segment_path(tmp_path, 2).write_bytes(frame_all(_payloads(range(100, 102))))
    with FeedbackLog(tmp_path) as log:
        assert log.recovery.records == 4
        assert log.recovery.problems == [f"wal-{1:012d}.log: CRC mismatch at byte {2 * record}"]
    # Records after the bad one in that segment are quarantined, later segments replayed.
    assert sorted(logged_user_ids(tmp_path)) == ["u0", "u1", "u100", "u101"]
    assert scan((tmp_path / "corrupt" / f"wal-{1:012d}.log.{2 * record}").read_bytes()).problem


def test_rotation_writes_parquet_in_the_trainer_event_schema(tmp_path: Path) -> None:
    with FeedbackLog(tmp_path, max_segment_bytes=4096) as log:
        for i in range(60):
            log.append(
                [
                    event(i, "impression", position=i % 5 + 1, request_id=f"r{i}", variant="B"),
                    event(i, "purchase", value=12.5, price=10.0, context={"device": "ios"}),
                    event(i, "click", experiment="exp", model_version=3, context={"app": "2"}),
                ]
            )
        assert log.stats().sealed_segments > 1
    assert segments(tmp_path) == {}
    frame = parquet_events(tmp_path)
    assert frame.height == 180
    assert len(list((tmp_path / "parquet").glob("*.parquet"))) > 1
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame.schema["position"] == pl.Int32
    assert frame["ts"].dt.epoch("ms").unique().to_list() == [1_700_000_000_000]
    purchases = frame.filter(pl.col("event") == "purchase")
    assert purchases["value"].unique().to_list() == [12.5]
    assert purchases["device"].unique().to_list() == ["ios"]
    impressions = frame.filter(pl.col("event") == "impression")
    assert impressions["position"].null_count() == 0 and impressions["price"].null_count() == 60
    # Context columns from different files are all there; absent ones are null, not errors.
    clicks = frame.filter(pl.col("event") == "click")
    assert clicks["app"].unique().to_list() == ["2"] and clicks["device"].null_count() == 60
    assert clicks["model_version"].unique().to_list() == ["3"]


def test_old_segment_is_sealed_without_traffic(tmp_path: Path) -> None:
    with FeedbackLog(tmp_path, max_segment_age_s=0.05) as log:
        log.append([event(1)])
        deadline = time.monotonic() + 10
        # The counter moves after the Parquet file is complete: wait on it, not on the file.
        while log.stats().converted_segments < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.stats().converted_segments == 1
        assert any((tmp_path / "parquet").glob("*.parquet"))
    assert parquet_events(tmp_path)["user_id"].to_list() == ["u1"]


@pytest.mark.parametrize("interval_ms", [0.0, 5.0])  # appenders lead / the flusher fsyncs
def test_concurrent_appenders_share_fsyncs(tmp_path: Path, monkeypatch, interval_ms: float) -> None:
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.01)  # a slow disk: appenders pile up behind each fsync
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    threads, per_thread = 16, 10
    # Small segments: rotations under load too.
    with FeedbackLog(tmp_path, max_segment_bytes=2048, fsync_interval_ms=interval_ms) as log:

        def work(t: int) -> None:
            for j in range(per_thread):
                log.append([event(t * 1000 + j)])

        with Workers() as workers:
            for t in range(threads):
                workers.start(work, t)
        stats = log.stats()
    assert stats.appends == threads * per_thread
    assert stats.fsyncs < stats.appends / 2
    assert stats.sealed_segments > 1
    logged = logged_user_ids(tmp_path)
    assert sorted(logged) == sorted(
        f"u{t * 1000 + j}" for t in range(threads) for j in range(per_thread)
    )


def test_disk_full_on_write_fails_that_append_and_keeps_the_log(
    tmp_path: Path, monkeypatch
) -> None:
    log = FeedbackLog(tmp_path)
    log.append([event(1), event(2)])
    real_write = os.write

    def partial_then_full(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            if not getattr(partial_then_full, "done", False):
                partial_then_full.done = True  # type: ignore[attr-defined]
                return real_write(fd, bytes(data)[:7])  # half a record reaches the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", partial_then_full)
    with pytest.raises(LogFull, match="disk full"):
        log.append([event(3)])
    monkeypatch.setattr(os, "write", real_write)
    # The half record was cut: the segment holds whole records only, and appends go on.
    assert scan(segment_path(tmp_path, 1).read_bytes()).clean
    log.append([event(4)])
    log.close()
    assert sorted(logged_user_ids(tmp_path)) == ["u1", "u2", "u4"]


def test_failed_fsync_refuses_appends_and_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch
) -> None:
    log = FeedbackLog(tmp_path)
    log.append([event(1)])
    monkeypatch.setattr(os, "fsync", _fails_on(tmp_path, os.fsync, errno.EIO))
    with pytest.raises(LogUnavailable, match="fsync failed"):
        log.append([event(2)])
    with pytest.raises(LogUnavailable, match="needs a restart"):
        log.append([event(3)])
    monkeypatch.undo()
    log.close()
    # Reopening re-reads what is on disk; the unacknowledged event may be there (at least once).
    with FeedbackLog(tmp_path):
        pass
    assert set(logged_user_ids(tmp_path)) >= {"u1"}
    assert "u3" not in logged_user_ids(tmp_path)


def test_one_writer_per_directory_and_no_appends_after_close(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path)
    with pytest.raises(LogUnavailable, match="in use"):
        FeedbackLog(tmp_path)
    log.close()
    with pytest.raises(LogUnavailable, match="closed"):
        log.append([event(1)])
    assert wal_user_ids(tmp_path) == []


def test_no_room_for_a_new_segment_keeps_appending_to_the_current_one(
    tmp_path: Path, monkeypatch
) -> None:
    real_open = os.open

    def no_new_files(path, flags, *args):
        if str(path).startswith(str(tmp_path)) and str(path).endswith(".log"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, flags, *args)

    log = FeedbackLog(tmp_path, max_segment_bytes=4096)
    monkeypatch.setattr(os, "open", no_new_files)
    for i in range(100):  # well past the segment size
        log.append([event(i)])
    assert log.stats().sealed_segments == 0
    monkeypatch.undo()
    log.close()  # room again: the close seals the segment into Parquet
    assert segments(tmp_path) == {}
    assert sorted(parquet_events(tmp_path)["user_id"]) == sorted(f"u{i}" for i in range(100))


def test_crash_during_conversion_is_redone_on_open(tmp_path: Path) -> None:
    # A crash after the Parquet file was published but before its segment was deleted, and
    # one in the middle of writing the next Parquet file.
    segment_path(tmp_path, 1).write_bytes(frame_all(_payloads(range(3))))
    segment_path(tmp_path, 2).write_bytes(frame_all(_payloads(range(3, 5))))
    (tmp_path / "parquet").mkdir()
    pl.DataFrame({"user_id": ["u0"]}).write_parquet(
        tmp_path / "parquet" / f"events-{1:012d}.parquet"
    )
    (tmp_path / "parquet" / f"events-{2:012d}.parquet.tmp").write_bytes(b"PAR1 half")
    with FeedbackLog(tmp_path) as log:
        log.append([event(5)])
    assert sorted(parquet_events(tmp_path)["user_id"]) == [f"u{i}" for i in range(6)]
    assert not list((tmp_path / "parquet").glob("*.tmp"))
    assert sorted(p.name for p in (tmp_path / "parquet").iterdir()) == [
        f"events-{seq:012d}.parquet" for seq in (1, 2, 3)
    ]
