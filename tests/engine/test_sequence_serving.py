"""The sequence retrieval model (SASRec) served: its user tower runs in the engine on the
user's recent items plus the clicks the server logged since training, so a click logged through
LogEvents changes the next Recommend, and the answer is the ONNX tower run in-process on the
updated history."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from clients import ReachRankClient
from engine.models.sequence import SequenceRetrievalModel
from engine.repository import read_bundle
from engine.server import start_server
from engine.settings import Settings
from training.examples import positives
from training.pipeline import SplitPlan, TrainConfig
from training.retrieval import RetrievalConfig, interactions, train_retrieval
from training.sequence import SequenceConfig

TINY_SEQUENCE = SequenceConfig(dim=16, max_len=8, heads=2, layers=1, max_epochs=4, eval_every=2)


@pytest.fixture(scope="module")
def sequence_repo(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding one retrieval bundle: the SASRec model trained by the real trainer
    on the tiny simulated log."""
    repo = tmp_path_factory.mktemp("sequence_repo")
    events = pl.scan_parquet(sim_dir / "events.parquet")
    config = TrainConfig(progress=False)
    plan = SplitPlan.plan(events, config).for_retrieval(events, config)
    pos, spec = plan.label(positives(events).with_columns(pl.lit("positive").alias("event")))
    retrieval = RetrievalConfig(models=("sasrec",), sequence=TINY_SEQUENCE, progress=False)
    result = train_retrieval(
        interactions(pos.collect().sort("user_id", "item_id")), repo, retrieval, spec
    )
    assert result.best == "sasrec" and result.leaderboard[0]["params"]["epochs"] >= 1
    return repo


def tower_top_k(
    bundle: Path, user_id: str, clicked: list[str], k: int
) -> tuple[list[str], list[float]]:
    """In-process reference: the bundle's ONNX user tower on the user's shipped recent items
    plus ``clicked``, against the item table, consumed and clicked items excluded."""
    ref = read_bundle(bundle.parent.parent, bundle.parent.name, int(bundle.name))
    spec = ref.manifest.sequence
    users = pl.read_parquet(ref.file("users"))["user_id"].to_list()
    items = pl.read_parquet(ref.file("items"))["item_id"].to_list()
    row, item_row = users.index(user_id), {v: i for i, v in enumerate(items)}
    indptr, recent = np.load(ref.file("recent_indptr")), np.load(ref.file("recent_indices"))
    history = [*recent[indptr[row] : indptr[row + 1]], *(item_row[c] for c in clicked)]
    history = history[-spec.max_len :]
    seq = np.full((1, spec.max_len), spec.pad, dtype=np.int64)
    seq[0, spec.max_len - len(history) :] = history
    session = ort.InferenceSession(str(ref.file("user_tower")), providers=["CPUExecutionProvider"])
    (query,) = session.run(None, {"items": seq})
    scores = np.load(ref.file("item_embeddings")) @ query[0]
    c_ptr, consumed = np.load(ref.file("consumed_indptr")), np.load(ref.file("consumed_indices"))
    scores[consumed[c_ptr[row] : c_ptr[row + 1]]] = -np.inf
    scores[[item_row[c] for c in clicked]] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [items[i] for i in top], [float(scores[i]) for i in top]


def test_a_logged_click_changes_the_next_recommendation(
    sequence_repo: Path, tmp_path: Path
) -> None:
    bundle = sequence_repo / "retrieval" / "1"
    ref = read_bundle(sequence_repo, "retrieval", 1)
    users = pl.read_parquet(ref.file("users"))["user_id"].to_list()
    user, k = users[0], 10
    settings = Settings(repo=sequence_repo, port=0, feedback_dir=tmp_path / "fb")
    running = start_server(settings)
    try:
        model = running.registry.get("retrieval")
        assert isinstance(model, SequenceRetrievalModel) and model.live is not None
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            client.wait_ready(timeout=30)
            before = client.recommend(user, k)
            # Without live clicks the shipped row is the tower on the shipped recent items.
            want_ids, want_scores = tower_top_k(bundle, user, [], k)
            assert [i.item_id for i in before.items] == want_ids
            np.testing.assert_allclose(
                [i.retrieval_score for i in before.items], want_scores, rtol=1e-4, atol=1e-5
            )
            # The user clicks the item the model ranked last: the tower sees it as newest.
            clicked = before.items[-1].item_id
            assert (
                client.log_events(
                    [
                        {"user_id": user, "item_id": clicked, "event": e}
                        for e in ("impression", "click")
                    ]
                )
                == 2
            )
            after = client.recommend(user, k)
    finally:
        running.stop(0)
    got_ids = [i.item_id for i in after.items]
    want_ids, want_scores = tower_top_k(bundle, user, [clicked], k)
    assert after.strategy == "personalised"
    assert clicked not in got_ids
    assert got_ids != [i.item_id for i in before.items]
    assert got_ids == want_ids
    np.testing.assert_allclose(
        [i.retrieval_score for i in after.items], want_scores, rtol=1e-4, atol=1e-5
    )


def test_the_tower_input_is_recent_items_then_fresh_clicks(sequence_repo: Path) -> None:
    """Fresh clicks go after the shipped items, the oldest fall off at max_len, padding left;
    an impression alone is not a click."""
    from types import SimpleNamespace

    from engine.live_history import LiveHistory
    from engine.registry import ModelRegistry

    registry = ModelRegistry(Settings(repo=sequence_repo, batching=False))
    registry.load("retrieval")
    model = registry.get("retrieval")
    assert isinstance(model, SequenceRetrievalModel)
    model.live = LiveHistory()
    user = model.user_ids[0]
    cut = model.history_cut_ms or 0
    model.live.observe(
        [
            SimpleNamespace(
                user_id=user, item_id=model.item_ids[3], event="click", ts_unix_ms=cut + 1
            ),
            SimpleNamespace(
                user_id=user, item_id=model.item_ids[5], event="impression", ts_unix_ms=cut + 2
            ),
            SimpleNamespace(
                user_id=user, item_id=model.item_ids[4], event="click", ts_unix_ms=cut + 3
            ),
            SimpleNamespace(user_id=user, item_id=model.item_ids[6], event="click", ts_unix_ms=cut),
        ]
    )
    fresh = model.fresh_clicks(user)
    np.testing.assert_array_equal(fresh, [3, 4])
    seq = model.sequence(0, fresh)[0]
    shipped = model.recent_indices[model.recent_indptr[0] : model.recent_indptr[1]]
    expected = np.concatenate([shipped, [3, 4]])[-model.max_len :]
    np.testing.assert_array_equal(seq[model.max_len - len(expected) :], expected)
    assert np.all(seq[: model.max_len - len(expected)] == model.pad)
    unknown = model.sequence(None, np.zeros(0, np.int64))[0]
    assert np.all(unknown == model.pad)
    # Fresh clicks move the query away from the shipped row.
    assert not np.allclose(model.user_query(0, user), model.user_embeddings[0:1])
    np.testing.assert_array_equal(model.user_query(0, "nobody"), model.user_embeddings[0:1])
    model.close()


def test_the_trainer_ships_the_tower_on_each_users_recent_items(sequence_repo: Path) -> None:
    ref = read_bundle(sequence_repo, "retrieval", 1)
    spec = ref.manifest.sequence
    indptr, recent = np.load(ref.file("recent_indptr")), np.load(ref.file("recent_indices"))
    user_rows = np.load(ref.file("user_embeddings"))
    assert np.diff(indptr).max() == spec.max_len and spec.pad == len(
        pl.read_parquet(ref.file("items"))
    )
    session = ort.InferenceSession(str(ref.file("user_tower")), providers=["CPUExecutionProvider"])
    seq = np.full((len(user_rows), spec.max_len), spec.pad, dtype=np.int64)
    for u in range(len(user_rows)):
        items = recent[indptr[u] : indptr[u + 1]]
        seq[u, spec.max_len - len(items) :] = items
    (vectors,) = session.run(None, {"items": seq})
    np.testing.assert_allclose(vectors, user_rows, atol=1e-4)
    assert replace(TINY_SEQUENCE).max_len == spec.max_len
