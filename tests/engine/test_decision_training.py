"""Training from the decision log: impressions the server logged are joined to the clicks the
client sent back by request id and item, the training rows carry the features exactly as
served (not as a later recomputation would give them: the live histories moved on), and the
CTR model trained on them is written as a servable bundle that the server loads and ranks with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from bench.ope import Contexts, World, serve, server
from clients.cli import main
from engine.models.ctr import CTRModel
from training.decisions import read_feedback, served_examples


@pytest.fixture(scope="module")
def logged(trained_repo: Path, sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("decision-training")
    world = World(sim_dir, trained_repo, "ctr-lr")
    contexts = Contexts.draw(world, 600, seed=3)
    draws = np.random.default_rng(4).random(600)
    with server(
        trained_repo,
        decision_log_dir=root / "decisions",
        feedback_dir=root / "feedback",
        decision_sample_rates={"rank_ads": 1.0},
        decision_seed=1,
        exploration={"rank_ads": {"method": "epsilon", "epsilon": 0.3}},
    ) as (client, running):
        shown = serve(client, world, contexts, "r", draws, threads=1)  # a fixed order
        ctr = running.registry.get("ctr")
        assert isinstance(ctr, CTRModel)
    clicked = draws < shown["expected"]
    return {"root": root, "shown": shown, "clicked": clicked, "ctr": ctr, "repo": trained_repo}


def test_clicks_join_their_decisions_by_request_id(logged: dict) -> None:
    root = logged["root"]
    data = served_examples(root / "decisions", read_feedback(root / "feedback"))
    frame = data.frame.with_columns(pl.col("request_id").str.slice(2).cast(pl.Int64).alias("i"))
    assert frame.height == 600 and (frame["position"] == 1).all()
    index = frame["i"].to_numpy()
    assert frame["item_id"].to_list() == [f"i{j}" for j in logged["shown"]["item"][index]]
    assert np.array_equal(data.label.astype(bool), logged["clicked"][index])
    assert 0 < data.label.sum() < 600


def test_training_rows_hold_the_features_as_served(logged: dict) -> None:
    root, ctr = logged["root"], logged["ctr"]
    data = served_examples(root / "decisions", read_feedback(root / "feedback"))
    decisions = pl.read_parquet(root / "decisions" / "parquet" / "*.parquet").filter(
        pl.col("position") > 0
    )
    by_request = {
        r: (c, n, json.loads(x))
        for r, c, n, x in decisions.select("request_id", "cat", "num", "context").iter_rows()
    }
    position = [f.name for f in data.schema.categorical].index("position")
    recomputed_differs = 0
    for i, (rid, user, item) in enumerate(
        data.frame.select("request_id", "user_id", "item_id").iter_rows()
    ):
        cat, num, context = by_request[rid]
        assert np.array_equal(np.delete(data.cat[i], position), np.delete(cat, position))
        assert np.array_equal(data.num[i], np.array(num, dtype=np.float32))
        _, now = ctr.features(user, ctr.item_rows([item]), context)
        recomputed_differs += not np.array_equal(now[0], data.num[i])
    # Later events moved the users' live histories: recomputing now would not give the same.
    assert recomputed_differs > 0


def test_reachrank_train_on_the_decisions_writes_a_bundle_that_serves(
    logged: dict, tmp_path: Path
) -> None:
    root = logged["root"]
    result = CliRunner().invoke(
        main,
        [
            "train", "--format", "decisions",
            "--events", str(root / "decisions"),
            "--feedback", str(root / "feedback"),
            "--serving-repo", str(logged["repo"]),
            "--out", str(tmp_path),
            "--ctr-epochs", "2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["rows"] == 600 and np.isfinite(report["test"]["logloss"])
    manifest = json.loads((Path(report["bundle"]) / "manifest.json").read_text())
    assert manifest["train"]["source"] == "decisions"
    assert manifest["features"] == logged["ctr"].schema.to_json()
    with server(tmp_path) as (client, _):
        auction = client.rank_ads("u3", [{"ad_id": "i1", "bid": 1.0}, {"ad_id": "i2", "bid": 1.0}])
        assert auction.models[0].name == "ctr" and 0 < auction.winners[0].pctr < 1
