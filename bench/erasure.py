"""Erasure of one user (ForgetUser's feedback-log part) from a feedback log of 1M and 10M events:
seconds, files rewritten, and how it scales with the log.

    python -m bench.erasure [--events 1000000,10000000] [--users-per-event 0.1] [--dir DIR]

The log is built the way the server leaves it: Parquet files of ``--segment-rows`` events each
(a sealed 64 MiB WAL segment holds ~500k events) in the log's own schema, plus an open WAL
segment with recent events, then opened as a real :class:`engine.feedback.FeedbackLog`. Two
users are erased in turn: a typical one (``--users-per-event`` 0.1: ten events on average, in a
few files) and a heavy one with events in every file (the worst case: every file is
rewritten). Prints a table and writes bench/results/erasure.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from reachrank.v1 import feedback_pb2

from engine.feedback import FeedbackLog
from engine.feedback.parquet import FIXED_COLUMNS
from engine.feedback.segments import parquet_path

RESULTS = Path(__file__).resolve().parent / "results" / "erasure.json"
TYPICAL, HEAVY = "u0000017", "heavy-user"
EVENTS = ["impression", "impression", "impression", "click", "purchase"]


def segment_frame(rng: np.random.Generator, rows: int, users: int, start_ms: int) -> pl.DataFrame:
    """``rows`` events in the feedback log's Parquet schema (engine.feedback.parquet)."""
    user = rng.integers(0, users, rows)
    frame = pl.DataFrame(
        {
            "user_id": pl.Series(user).cast(pl.String).str.zfill(7),
            "item_id": pl.Series(rng.integers(0, 50_000, rows)).cast(pl.String),
            "ts": pl.Series(start_ms + np.sort(rng.integers(0, 3_600_000, rows))),
            "event": pl.Series(np.array(EVENTS)[rng.integers(0, len(EVENTS), rows)]),
            "value": pl.Series(rng.random(rows) * 50),
            "price": pl.Series(rng.random(rows) * 20),
            "position": pl.Series(rng.integers(1, 11, rows), dtype=pl.Int32),
            "request_id": pl.Series(rng.integers(0, 2**62, rows)).cast(pl.String),
            "experiment": pl.repeat("exp-1", rows, eager=True),
            "variant": pl.Series(np.array(["a", "b"])[rng.integers(0, 2, rows)]),
            "model": pl.repeat("ctr", rows, eager=True),
            "model_version": pl.repeat(3, rows, eager=True, dtype=pl.Int64),
            "device": pl.Series(np.array(["mobile", "desktop"])[rng.integers(0, 2, rows)]),
        }
    )
    return frame.with_columns(
        ("u" + pl.col("user_id")).alias("user_id"),
        pl.from_epoch("ts", time_unit="ms").dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
    ).select(*FIXED_COLUMNS, "device")


def build_log(directory: Path, events: int, segment_rows: int, users: int, seed: int) -> int:
    """Parquet files as the log's converter writes them; returns how many."""
    rng = np.random.default_rng(seed)
    (directory / "parquet").mkdir(parents=True)
    start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
    files = 0
    for seq, lo in enumerate(range(0, events, segment_rows), start=1):
        frame = segment_frame(rng, min(segment_rows, events - lo), users, start + seq * 3_600_000)
        heavy = frame.head(5).with_columns(pl.lit(HEAVY).alias("user_id"))
        pl.concat([frame.slice(5), heavy]).write_parquet(parquet_path(directory, seq))
        files += 1
    return files


def wal_events(n: int) -> list[feedback_pb2.FeedbackEvent]:
    """The open segment's recent events, a few of them the two users'."""
    users = [TYPICAL, HEAVY] + [f"u{i:07d}" for i in range(100, 100 + n - 2)]
    return [
        feedback_pb2.FeedbackEvent(
            user_id=u, item_id=f"{i % 977}", event="impression", request_id=f"r{i}", position=1
        )
        for i, u in enumerate(users)
    ]


def run(events: int, segment_rows: int, users_per_event: float, base: Path, seed: int) -> dict:
    directory = Path(tempfile.mkdtemp(prefix=f"erasure-{events}-", dir=base))
    try:
        started = time.perf_counter()
        files = build_log(directory, events, segment_rows, int(events * users_per_event), seed)
        built_s = time.perf_counter() - started
        log = FeedbackLog(directory)
        log.append(wal_events(1000))
        row: dict = {"events": events, "parquet_files": files, "build_s": round(built_s, 1)}
        try:
            for name, user in (("typical", TYPICAL), ("heavy", HEAVY)):
                before = {p.name: p.stat().st_ino for p in (directory / "parquet").iterdir()}
                t0 = time.perf_counter()
                erased = log.erase_users([user])
                seconds = time.perf_counter() - t0
                after = {p.name: p.stat().st_ino for p in (directory / "parquet").iterdir()}
                rewritten = sum(before[n] != after[n] for n in before)
                row[name] = {
                    "seconds": round(seconds, 3),
                    "files_rewritten": rewritten,
                    "erased": erased,
                    "events_per_s": round(events / seconds),
                }
        finally:
            log.close()
        return row
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def boundary_cost(directory: Path, n: int = 200_000) -> dict:
    """µs per request of :meth:`engine.privacy.PrivacyPolicy.resolve` (the per-request
    privacy step): off (no key, nobody forgotten), with pseudonyms at rest (one HMAC), and
    with a non-empty tombstone set (one keyed HMAC-SHA256), against a 3-entry dict copy (what the
    servicer already does with a request's context) on the same machine in the same run."""
    from engine.privacy.policy import PrivacyPolicy
    from engine.privacy.tombstones import ensure_secret, write_digests
    from kernels.forgotten import keyed_digest

    key = directory / "key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef")
    tombstones = directory / "forgotten.parquet"
    secret = ensure_secret(tombstones)
    write_digests(tombstones, frozenset(keyed_digest(secret, f"gone-{i}") for i in range(1000)))
    cases = {
        "off": PrivacyPolicy(directory / "none.parquet"),
        "pseudonyms": PrivacyPolicy(directory / "none.parquet", key),
        "tombstones": PrivacyPolicy(tombstones),
        "both": PrivacyPolicy(tombstones, key),
    }
    context = {"device": "mobile", "hour": "12", "page": "home"}

    def timed(fn: object) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()  # type: ignore[operator]
            best = min(best, time.perf_counter() - t0)
        return best / n * 1e6

    baseline = timed(lambda: dict(context))
    out = {"dict_copy_us": round(baseline, 3)}
    for name, policy in cases.items():
        out[f"{name}_us"] = round(timed(lambda p=policy: p.resolve("u0001234", 0)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="1000000,10000000")
    parser.add_argument("--segment-rows", type=int, default=500_000)
    parser.add_argument("--users-per-event", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        boundary = boundary_cost(Path(scratch))
    print("per-request privacy step (µs):", json.dumps(boundary))
    rows = [
        run(int(n), args.segment_rows, args.users_per_event, args.dir, args.seed)
        for n in args.events.split(",")
    ]
    print(
        f"{'events':>11} {'files':>5}  {'typical s':>9} {'rewritten':>9}  {'heavy s':>8} {'rewritten':>9}"
    )
    for r in rows:
        t, h = r["typical"], r["heavy"]
        print(
            f"{r['events']:>11,} {r['parquet_files']:>5}  {t['seconds']:>9.2f} {t['files_rewritten']:>9}"
            f"  {h['seconds']:>8.2f} {h['files_rewritten']:>9}"
        )
    if len(rows) > 1:
        for case in ("typical", "heavy"):
            ratio = rows[-1][case]["seconds"] / rows[0][case]["seconds"]
            scale = rows[-1]["events"] / rows[0]["events"]
            print(f"{case}: {scale:.0f}x the events took {ratio:.1f}x the time")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.node(),
                "cpus": os.cpu_count(),
                "boundary": boundary,
                "runs": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
