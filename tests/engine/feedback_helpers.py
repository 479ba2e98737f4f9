"""Helpers for the feedback-log tests: making events and reading back everything a log holds."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from reachrank.v1 import feedback_pb2

from engine.feedback.parquet import decode
from engine.feedback.records import scan
from engine.feedback.segments import segments
from training.readers import read_events


def event(i: int, kind: str = "click", **fields: object) -> feedback_pb2.FeedbackEvent:
    """Event number ``i``: user ``u<i>``, item ``i<i>``, a fixed timestamp."""
    values = {
        "user_id": f"u{i}",
        "item_id": f"i{i}",
        "event": kind,
        "ts_unix_ms": 1_700_000_000_000,
    }
    return feedback_pb2.FeedbackEvent(**{**values, **fields})


def parquet_events(directory: Path) -> pl.DataFrame:
    """Every row of the log's Parquet output, read the way the trainer reads it."""
    frame, report = read_events(directory / "parquet", "events").collect()
    assert report.dropped == {}, report
    return frame


def wal_user_ids(directory: Path) -> list[str]:
    """User ids of the valid records still in WAL segments (not yet converted)."""
    found = []
    for path in segments(directory).values():
        found += [e.user_id for e in decode(scan(path.read_bytes()).payloads)]
    return found


def logged_user_ids(directory: Path) -> list[str]:
    """User ids of every event in the log: Parquet output plus WAL segments."""
    in_parquet = (
        parquet_events(directory)["user_id"].to_list()
        if any((directory / "parquet").glob("*.parquet"))
        else []
    )
    return in_parquet + wal_user_ids(directory)
