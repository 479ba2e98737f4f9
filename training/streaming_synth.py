"""A generated event log of any size, written part by part (never whole in memory): the input
of the trainer's beyond-memory test and of ``bench.training --only streaming``.

Each session is one slate of impressions of one user; an impression is clicked with
``examination[position] * sigmoid(bias + affinity[user group, item group] + quality[item])``
and the click follows it by a few seconds with the same ``request_id``, so the CTR models
have something to learn and the log has the shape of a feedback log (impressions dominate).
Deterministic for a seed and independent of the part size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
_GROUPS = 8
_START = datetime(2026, 1, 1, tzinfo=UTC)
# Rows per Parquet row group: what a streaming scan decodes at a time.
ROW_GROUP = 65_536


@dataclass(frozen=True)
class GeneratedLog:
    """Size and shape of the generated log."""

    events: int
    users: int = 50_000
    items: int = 5_000
    days: int = 60
    slate: int = 8
    seed: int = 0
    # Sessions generated (and written as one Parquet file) at a time.
    sessions_per_part: int = 100_000
    # A ``page`` context column (the item's URL, ~40 characters), as web logs carry.
    page: bool = False
    # A ``user_agent`` context column (~130 characters, one of a few browsers per device), as
    # web logs carry: wide rows make a log large in memory for few events.
    user_agent: bool = False


def write_generated_log(out: Path, config: GeneratedLog) -> dict[str, int]:
    """Write about ``config.events`` events as ``out/part-*.parquet`` (the ``events`` format's
    directory of Parquet files); returns the rows written per event type."""
    out.mkdir(parents=True, exist_ok=True)
    world = np.random.default_rng(config.seed)
    affinity = world.normal(0.0, 1.2, (_GROUPS, _GROUPS))
    quality = world.normal(0.0, 0.5, config.items)
    examination = 1.0 / np.arange(1, config.slate + 1) ** 0.7
    # Expected clicks per impression decide how many sessions make ``events`` rows.
    per_session = config.slate * (1.0 + 0.15)
    sessions = max(1, round(config.events / per_session))
    counts = {"impression": 0, "click": 0}
    for part, first in enumerate(range(0, sessions, config.sessions_per_part)):
        n = min(config.sessions_per_part, sessions - first)
        rng = np.random.default_rng([config.seed, part])
        frame = _part(rng, first, n, config, affinity, quality, examination)
        frame.write_parquet(out / f"part-{part:05d}.parquet", row_group_size=ROW_GROUP)
        for kind, rows in frame.group_by("event").len().iter_rows():
            counts[kind] += rows
    return counts


def _part(
    rng: np.random.Generator,
    first: int,
    n: int,
    config: GeneratedLog,
    affinity: np.ndarray,
    quality: np.ndarray,
    examination: np.ndarray,
) -> pl.DataFrame:
    k = config.slate
    user = rng.integers(0, config.users, n)
    start_us = int(_START.timestamp() * 1e6)
    ts = start_us + rng.integers(0, config.days * 86_400_000_000, n)
    item = rng.integers(0, config.items, (n, k))
    device = rng.integers(0, len(DEVICES), n)
    logit = -1.0 + affinity[(user % _GROUPS)[:, None], item % _GROUPS] + quality[item]
    logit += np.array([0.0, 0.3, -0.2])[device][:, None]
    p = examination[None, :] / (1.0 + np.exp(-logit))
    clicked = rng.random((n, k)) < p
    request = np.arange(first, first + n)
    position = np.tile(np.arange(1, k + 1, dtype=np.int32), n)
    imp = pl.DataFrame(
        {
            "user_id": np.repeat(user, k),
            "item_id": item.ravel(),
            "ts": np.repeat(ts, k),
            "event": pl.Series(["impression"] * (n * k)),
            "position": position,
            "request_id": np.repeat(request, k),
            "device": np.repeat(device, k),
        }
    )
    rows, cols = np.nonzero(clicked)
    clk = pl.DataFrame(
        {
            "user_id": user[rows],
            "item_id": item[rows, cols],
            "ts": ts[rows] + rng.integers(1_000_000, 30_000_000, rows.size),
            "event": pl.Series(["click"] * rows.size),
            "position": (cols + 1).astype(np.int32),
            "request_id": request[rows],
            "device": device[rows],
        }
    )
    return pl.concat([imp, clk]).select(
        pl.format("u{}", "user_id").alias("user_id"),
        pl.format("i{}", "item_id").alias("item_id"),
        pl.from_epoch("ts", time_unit="us").dt.replace_time_zone("UTC").alias("ts"),
        "event",
        "position",
        pl.format("r{}", "request_id").alias("request_id"),
        pl.col("device").replace_strict(dict(enumerate(DEVICES)), return_dtype=pl.String),
        *(
            [pl.format("https://shop.example.com/item/{}?ref=feed", "item_id").alias("page")]
            if config.page
            else []
        ),
        *(
            [
                pl.format(
                    "Mozilla/5.0 ({}; build {}) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/131.0.0.0 Safari/537.36 ReachRankSynth/1.0",
                    pl.col("device").replace_strict(
                        dict(enumerate(DEVICES)), return_dtype=pl.String
                    ),
                    pl.col("user_id") % 7,
                ).alias("user_agent")
            ]
            if config.user_agent
            else []
        ),
    )
