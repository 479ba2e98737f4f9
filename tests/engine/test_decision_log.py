"""The server's decision log, end to end: Recommend and RankAds through the real server and
client are logged with the caller's request id, the candidates shown and their positions,
the scores and the very features the CTR model scored, the models and the propensities of an
exploring policy; Parquet after shutdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clients import ReachRankClient
from engine.models.ctr import CTRModel
from engine.server import start_server
from engine.settings import Settings
from kernels.decision_table import SCHEMAS_DIR


def decisions(directory: Path) -> pl.DataFrame:
    return pl.read_parquet(directory / "parquet" / "*.parquet").sort("ts", "candidate")


@pytest.fixture(scope="module")
def logged(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Serve 30 Recommend (Thompson sampling on half of them) and 30 epsilon-greedy RankAds
    calls, logging every decision; stop."""
    log_dir = tmp_path_factory.mktemp("decisions")
    settings = Settings(
        repo=trained_repo,
        port=0,
        decision_log_dir=log_dir,
        decision_sample_rates={"recommend": 1.0, "rank_ads": 1.0},
        decision_seed=5,
        exploration={
            "rank_ads": {"method": "epsilon", "epsilon": 0.5, "slots": [1, 2]},
            "recommend": {"method": "thompson", "budget": 0.5, "known_strength": 20.0},
        },
    )
    running = start_server(settings)
    ads = [f"i{j}" for j in range(6)]  # items of the simulated catalogue
    answers: dict[str, object] = {}
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}") as client:
            client.wait_ready(timeout=30)
            for i in range(30):
                rid = f"rec-{i}"
                answers[rid] = client.recommend(
                    f"u{i}", k=4, context={"device": "mobile"}, request_id=rid
                )
                rid = f"ads-{i}"
                answers[rid] = client.rank_ads(
                    f"u{i}",
                    [{"ad_id": a, "bid": 1.0 + j / 10} for j, a in enumerate(ads)],
                    slots=2,
                    context={"device": "desktop"},
                    request_id=rid,
                )
        ctr = running.registry.get("ctr")
        assert isinstance(ctr, CTRModel)
    finally:
        running.stop(0)
    return {"dir": log_dir, "answers": answers, "ctr": ctr, "frame": decisions(log_dir)}


def test_every_decision_is_logged_under_its_request_id(logged: dict) -> None:
    frame = logged["frame"]
    assert set(frame["request_id"].unique()) == set(logged["answers"])
    for rid, answer in logged["answers"].items():
        rows = frame.filter(pl.col("request_id") == rid)
        shown = rows.filter(pl.col("position") > 0).sort("position")
        if rid.startswith("rec"):
            assert shown["item_id"].to_list() == answer.item_ids
            assert rows["rpc"][0] == "recommend" and rows["strategy"][0]
            assert json.loads(rows["context"][0]) == {"device": "mobile"}
            assert shown["score"].to_list() == pytest.approx([i.score for i in answer.items])
        else:
            assert shown["item_id"].to_list() == [a.ad_id for a in answer.winners]
            assert shown["price"].to_list() == pytest.approx([a.price for a in answer.winners])
            assert rows.height == 6 and rows["rpc"][0] == "rank_ads"
        assert rows["user_id"][0] == f"u{rid.split('-')[1]}"
        assert rows["model"][0] == "ctr" and rows["model_version"][0] >= 1


def test_logged_features_are_the_ones_the_model_scored(logged: dict) -> None:
    ctr: CTRModel = logged["ctr"]
    frame = logged["frame"].filter(pl.col("rpc") == "rank_ads")
    for rid in frame["request_id"].unique().to_list()[:5]:
        rows = frame.filter(pl.col("request_id") == rid).sort("candidate")
        context = json.loads(rows["context"][0])
        cat, num = ctr.features(rows["user_id"][0], ctr.item_rows(rows["item_id"]), context)
        logged_cat = np.array(rows["cat"].to_list(), dtype=np.int64)
        logged_num = np.array(rows["num"].to_list(), dtype=np.float32)
        assert np.array_equal(logged_cat, cat) and np.array_equal(logged_num, num)
        assert rows["score"].to_numpy() == pytest.approx(ctr.predict(cat, num), abs=1e-6)
    schema = logged["dir"] / SCHEMAS_DIR / f"{frame['feature_schema'][0]}.json"
    assert json.loads(schema.read_text()) == ctr.schema.to_json()


def test_exploring_decisions_log_exact_epsilon_propensities(logged: dict) -> None:
    ads = logged["frame"].filter(pl.col("rpc") == "rank_ads")
    assert (ads["exploration"] == "epsilon").all() and (ads["propensity_method"] == "exact").all()
    shown = ads.filter(pl.col("position") > 0)
    # Slot 1 of 6 ads: the best with 0.5 + 0.5 / 6, another with 0.5 / 6; slot 2: of 5 left.
    allowed = {1: {0.5 + 0.5 / 6, 0.5 / 6}, 2: {0.5 + 0.5 / 5, 0.5 / 5}}
    for position, propensity in zip(shown["position"], shown["propensity"], strict=True):
        assert min(abs(propensity - a) for a in allowed[position]) < 1e-9
    assert (ads.filter(pl.col("position") == 0)["propensity"] == 0).all()
    # Some slots really explored (not the greedy pick): the small propensities occur.
    assert (shown["propensity"] < 0.2).any()


def test_thompson_decisions_log_monte_carlo_propensities(logged: dict) -> None:
    recommend = logged["frame"].filter(pl.col("rpc") == "recommend")
    assert (recommend["exploration"] == "thompson").all()
    assert (recommend["propensity_method"] == "monte_carlo:256").all()
    shown = recommend.filter(pl.col("position") > 0)["propensity"]
    assert ((shown > 0) & (shown <= 1)).all() and (shown < 1).any()
    explored = recommend.group_by("request_id").agg(pl.col("explored").first())["explored"]
    assert 0 < explored.sum() < 30  # the budget: about half the requests explore
