"""Training on event logs larger than memory: where the trainer puts the tables that scale with
events, and how it cuts them into pieces that fit.

- The conformed log is written once to a work directory (:func:`stage_events`, Polars' streaming
  engine, one pass that also counts the bad rows), and every later query scans that file.
- Queries that hold a row per event (the CTR examples' click joins, the point-in-time
  histories) run per **user partition** (:func:`user_partitions`): every query of the CTR
  examples is a function of one user's events (a page view, ``request_id``, belongs to one user),
  so the partitions are independent and their results are concatenated; this is also the map a
  distributed engine would run per partition (see the README).
- Aggregates (profiles per user, positives per user and item, item statistics, histories'
  totals) run on the streaming engine, holding a row per group, not per event.

What does not scale with events stays in memory: the side tables, one row per user or item,
the retrieval models' matrices (per item pair / per user and item, see
:mod:`training.retrieval`), and the valid and test parts' labels and scores for the metrics
(12 bytes a row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from training.read_common import ReadReport, ReadResult

# Rows per row group of the work files: what a streaming scan decodes (and a sink buffers)
# at a time, per file.
ROW_GROUP = 65_536
# Row groups of the user partitions' files, which are written all at once (each buffers one).
PARTITION_ROW_GROUP = 16_384
# User partitions written per pass over the staged log.
SINKS_PER_PASS = 8


@dataclass(frozen=True)
class StreamingConfig:
    """Where and in what pieces the trainer streams (``reachrank train``'s default)."""

    # Holds the staged log, the user partitions and the encoded CTR rows (about the log's
    # size in Parquet plus the encoded rows); put it on a disk, not a memory-backed /tmp.
    work_dir: Path
    # Events per user partition: the most events a per-user query holds at once.
    partition_events: int = 1_000_000
    # Encoded CTR rows loaded at once to fit (batches are drawn within a chunk, the chunks'
    # order is shuffled per epoch); a multiple of 65,536 keeps predictions in the in-memory
    # path's batches.
    chunk_rows: int = 1 << 19


def stage_events(read: ReadResult, work_dir: Path) -> tuple[pl.LazyFrame, ReadReport]:
    """Write the conformed events to ``work_dir/events.parquet`` with the streaming engine,
    counting the bad rows in the same pass; returns a scan of that file and the read report."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "events.parquet"
    sink = read.events.sink_parquet(path, row_group_size=ROW_GROUP, lazy=True)
    _, counts = pl.collect_all([sink, read.counts], engine="streaming")
    return pl.scan_parquet(path), ReadReport.from_counts(counts, read.source, read.format)


def stage_table(frame: pl.LazyFrame | None) -> pl.DataFrame | None:
    """A side table (one row per item or user) collected on the streaming engine."""
    return None if frame is None else frame.collect(engine="streaming")


def partition_count(events: int, partition_events: int) -> int:
    return max(1, math.ceil(events / max(1, partition_events)))


def user_key(n: int) -> pl.Expr:
    """Which of ``n`` partitions a user's events go to (a stable hash of ``user_id``)."""
    return (pl.col("user_id").hash(seed=16) % n).cast(pl.Int64)


def user_partitions(
    events: pl.LazyFrame, work_dir: Path, partition_events: int
) -> list[pl.LazyFrame]:
    """``events`` cut into user partitions of about ``partition_events`` rows each, written in
    one streaming pass; a log that fits one partition is returned as is."""
    rows = int(events.select(pl.len()).collect(engine="streaming").item())
    n = partition_count(rows, partition_events)
    if n == 1:
        return [events]
    work_dir.mkdir(parents=True, exist_ok=True)
    key = user_key(n)
    paths = [work_dir / f"users-{p:04d}.parquet" for p in range(n)]
    # A few sinks per pass over the log: each buffers a row group, so one pass for all of a
    # hundred partitions would hold a hundred row groups.
    for first in range(0, n, SINKS_PER_PASS):
        pl.collect_all(
            [
                events.filter(key == p).sink_parquet(
                    paths[p], row_group_size=PARTITION_ROW_GROUP, lazy=True
                )
                for p in range(first, min(n, first + SINKS_PER_PASS))
            ],
            engine="streaming",
        )
    return [pl.scan_parquet(path) for path in paths]
