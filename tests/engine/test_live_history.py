"""Live user histories: events logged after a bundle's training cut move its users' history
features exactly as the trainer would count them (same definitions, same encoding); events
before the cut are already in the snapshot; LogEvents feeds them through the real server."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from clients import ReachRankClient
from engine.live_history import LiveHistory
from engine.models.ctr import CTRModel
from engine.registry import ModelRegistry
from engine.server import start_server
from engine.settings import Settings
from training.history import HistorySpec, history_tables


def event(user: str, item: str, kind: str, ts_ms: int) -> SimpleNamespace:
    return SimpleNamespace(user_id=user, item_id=item, event=kind, ts_unix_ms=ts_ms)


def test_store_keeps_recent_history_events_per_user() -> None:
    live = LiveHistory(per_user=3, max_users=2)
    live.observe(
        [
            event("a", "i1", "impression", 10),
            event("a", "i1", "click", 20),
            event("a", "i2", "purchase", 30),  # not a history event
            event("b", "i3", "impression", 40),
        ]
    )
    assert live.since("a", 0) == [("i1", False), ("i1", True)]
    assert live.since("a", 10) == [("i1", True)]  # strictly after the cut
    live.observe([event("a", f"i{k}", "impression", 50 + k) for k in range(3)])
    assert len(live.since("a", 0)) == 3  # the newest per_user
    live.observe([event("c", "i9", "click", 99)])  # a third user: the least recent goes
    assert live.since("b", 0) == [] and live.since("c", 0) == [("i9", True)]


@pytest.fixture(scope="module")
def ctr(trained_repo: Path) -> CTRModel:
    registry = ModelRegistry(Settings(repo=trained_repo, batching=False))
    registry.load("ctr")
    model = registry.get("ctr")
    assert isinstance(model, CTRModel) and model._history is not None
    return model


def test_live_events_give_the_trainers_features(ctr: CTRModel, sim_dir: Path) -> None:
    """Snapshot + live events, through the engine, equal the trainer's history tables over the
    log extended by the same events, encoded by the bundle's schema."""
    spec_json = ctr.ref.manifest.history
    spec = HistorySpec(tuple(spec_json.by), spec_json.prior, spec_json.strength)
    cut = spec_json.as_of_ms
    items = pl.read_parquet(sim_dir / "items.parquet")
    events = pl.read_parquet(sim_dir / "events.parquet")
    user = events["user_id"][0]
    by = spec.by[0]
    item_ids = items["item_id"].to_list()[:40]
    rows = ctr.item_rows(item_ids)
    clicked = item_ids[0]
    new = [
        event(user, clicked, "impression", cut + 1_000),
        event(user, clicked, "click", cut + 2_000),
        event(user, item_ids[1], "impression", cut + 3_000),
        event(user, item_ids[2], "impression", cut),  # at the cut: already in the snapshot
    ]
    before = ctr.features(user, rows, {})[1]
    ctr.live = LiveHistory()
    try:
        ctr.live.observe(new)
        after = ctr.features(user, rows, {})[1]
    finally:
        ctr.live = None
    # What the trainer would ship after a log with these events (the one at the cut is in it).
    ts = events["ts"].dtype
    extra = pl.DataFrame(
        {
            "user_id": [e.user_id for e in new[:3]],
            "item_id": [e.item_id for e in new[:3]],
            "event": [e.event for e in new[:3]],
            "ts": [
                datetime.datetime.fromtimestamp(e.ts_unix_ms / 1000, datetime.UTC) for e in new[:3]
            ],
        }
    ).with_columns(pl.col("ts").cast(ts))
    extended = pl.concat([events, extra], how="diagonal_relaxed").lazy()
    user_table, pair_tables = history_tables(extended, items, spec)
    index = {f.name: j for j, f in enumerate(ctr.schema.numeric)}
    urow = user_table.filter(pl.col("user_id") == user)
    for f in ctr.schema.numeric:
        if f.source == "user" and f.name in user_table.columns:
            want = ctr.schema.encode_numeric(f, urow[f.name].cast(pl.Float64).to_numpy())[0]
            np.testing.assert_allclose(after[:, index[f.name]], want, rtol=1e-6)
    pairs = pair_tables[by].filter(pl.col("user_id") == user)
    value_of = dict(zip(items["item_id"], items[by].cast(pl.String), strict=True))
    changed = {value_of[clicked], value_of[item_ids[1]]}
    for f in ctr.schema.numeric_from("user_item"):
        j = index[f.name]
        for r, item in enumerate(item_ids):
            value = value_of[item]
            if value in changed:
                raw = pairs.filter(pl.col(by).cast(pl.String) == value)[f.name].cast(pl.Float64)
                want = ctr.schema.encode_numeric(f, raw.to_numpy())[0]
                np.testing.assert_allclose(after[r, j], want, rtol=1e-6)
            else:
                assert after[r, j] == before[r, j]  # categories without new events stay put
    assert not np.array_equal(before, after)


def test_log_events_move_the_served_features(trained_repo: Path, tmp_path: Path) -> None:
    running = start_server(Settings(repo=trained_repo, port=0, feedback_dir=tmp_path / "fb"))
    try:
        ctr = running.registry.get("ctr")
        assert isinstance(ctr, CTRModel) and ctr.live is not None
        rows = ctr.item_rows(["i1", "i2", "i3"])
        before = ctr.features("u1", rows, {})[1].copy()
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            client.log_events(
                [{"user_id": "u1", "item_id": "i1", "event": k} for k in ("impression", "click")]
            )
        after = ctr.features("u1", rows, {})[1]
        assert not np.array_equal(before, after)
    finally:
        running.stop(0)
    # Without a feedback log there is nothing live.
    plain = start_server(Settings(repo=trained_repo, port=0))
    try:
        assert plain.registry.get("ctr").live is None
    finally:
        plain.stop(0)


def test_a_restart_replays_the_feedback_log_since_the_cut(
    trained_repo: Path, tmp_path: Path
) -> None:
    """Events logged before a restart count after it: from Parquet (converted at SIGTERM) and
    from WAL segments a crash left unconverted, once each."""
    from engine.feedback.log import FeedbackLog
    from engine.live_history import replay_feedback
    from tests.engine.feedback_helpers import event as feedback_event

    feedback = tmp_path / "fb"
    settings = Settings(repo=trained_repo, port=0, feedback_dir=feedback)
    running = start_server(settings)
    try:
        ctr = running.registry.get("ctr")
        rows = ctr.item_rows(["i1", "i2", "i3"])
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            client.log_events(
                [{"user_id": "u1", "item_id": "i1", "event": k} for k in ("impression", "click")]
            )
        live_features = ctr.features("u1", rows, {})[1].copy()
    finally:
        running.stop()  # drains and converts the log to Parquet
    assert list((feedback / "parquet").glob("*.parquet"))
    restarted = start_server(settings)
    try:
        ctr = restarted.registry.get("ctr")
        np.testing.assert_array_equal(ctr.features("u1", rows, {})[1], live_features)
    finally:
        restarted.stop(0)

    # A crash: events only in a WAL segment; a segment already converted is not read twice.
    crashed = tmp_path / "crashed"
    log = FeedbackLog(crashed)
    now = 1_900_000_000_000
    log.append(
        [feedback_event(1, "click", ts_unix_ms=now), feedback_event(1, "purchase", ts_unix_ms=now)]
    )
    live = LiveHistory()
    assert replay_feedback(live, crashed, now - 1) == 1  # the WAL segment (log still open)
    assert live.since("u1", now - 1) == [("i1", True)]
    log.close()  # converts the segment to Parquet
    assert replay_feedback(LiveHistory(), crashed, now - 1) == 1  # counted once
    assert replay_feedback(LiveHistory(), crashed, now) == 0  # nothing after that cut


def test_workers_replay_each_others_published_logs(tmp_path: Path) -> None:
    """A `--workers` worker's log sits beside its siblings'; their published Parquet is read,
    their WAL (maybe mid-conversion by a live sibling) is not."""
    from engine.feedback.log import FeedbackLog
    from engine.live_history import replay_feedback, sibling_logs
    from tests.engine.feedback_helpers import event as feedback_event

    root = tmp_path / "fb"
    now = 1_900_000_000_000
    for w in range(3):
        log = FeedbackLog(root / f"worker-{w}")
        log.append([feedback_event(w, "click", ts_unix_ms=now)])
        if w < 2:
            log.close()  # published; worker 2 is still writing its WAL
    assert sibling_logs(root / "worker-0") == [root / "worker-1", root / "worker-2"]
    assert sibling_logs(tmp_path / "fb") == []
    live = LiveHistory()
    assert (
        sum(replay_feedback(live, d, now - 1, wal=False) for d in sibling_logs(root / "worker-0"))
        == 1
    )
    assert live.since("u1", now - 1) == [("i1", True)] and live.since("u2", now - 1) == []
    log.close()  # worker 2's
