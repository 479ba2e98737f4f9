"""`train_all` on the tiny simulated log writes complete, evaluated, versioned bundles."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import polars as pl

from training.bundle import next_version


def test_bundles_and_manifests(trained_repo) -> None:
    for name in ("ctr", "retrieval"):
        assert next_version(trained_repo / name) == 2
        bundle = trained_repo / name / "1"
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["name"] == name and manifest["version"] == 1 and manifest["kind"] == name
        assert manifest["parity_max_abs_error"] <= 1e-4
        for rel in manifest["artifacts"].values():
            assert (bundle / rel).is_file()
        session = ort.InferenceSession(
            str(bundle / manifest["onnx"]["file"]), providers=["CPUExecutionProvider"]
        )
        assert [i.name for i in session.get_inputs()] == [
            i["name"] for i in manifest["onnx"]["inputs"]
        ]
        assert manifest["split"]["kind"] == "global_time"
    ctr = json.loads((trained_repo / "ctr" / "1" / "manifest.json").read_text())
    assert {f["name"] for f in ctr["features"]["categorical"]} >= {
        "user_id",
        "item_id",
        "category",
        "device",
        "position",
    }
    assert 0.5 < ctr["metrics"]["auc"] <= 1.0
    assert ctr["metrics"]["logloss"] > 0
    assert not list((trained_repo / "ctr").glob(".incoming-*"))


def test_report_compares_models_with_baselines(trained_repo) -> None:
    report = json.loads((trained_repo / "report.json").read_text())
    assert set(report["models"]) == {"ctr_fm", "retrieval_mf"}
    assert report["models"]["ctr_fm"]["logloss"] < report["baselines"]["ctr_base_rate"]["logloss"]
    for metric in ("recall@20", "ndcg@10", "hitrate@10", "coverage"):
        assert 0.0 <= report["models"]["retrieval_mf"][metric] <= 1.0
    assert (
        report["models"]["retrieval_mf"]["coverage"] > report["baselines"]["popularity"]["coverage"]
    )


def test_retrieval_artifacts_are_consistent(trained_repo, sim_dir) -> None:
    bundle = trained_repo / "retrieval" / "1"
    users = pl.read_parquet(bundle / "users.parquet")
    items = pl.read_parquet(bundle / "items.parquet")
    user_emb = np.load(bundle / "user_embeddings.npy", allow_pickle=False)
    item_emb = np.load(bundle / "item_embeddings.npy", allow_pickle=False)
    assert user_emb.shape == (users.height, 17) and item_emb.shape == (items.height, 17)
    assert user_emb.dtype == np.float32
    indptr = np.load(bundle / "consumed_indptr.npy")
    indices = np.load(bundle / "consumed_indices.npy")
    # The consumed lists hold exactly each user's clicked/bought items.
    events = pl.read_parquet(sim_dir / "events.parquet").filter(
        pl.col("event").is_in(["click", "purchase"])
    )
    u = users["user_id"][0]
    row = users.filter(pl.col("user_id") == u)["row"][0]
    consumed = {items["item_id"][int(i)] for i in indices[indptr[row] : indptr[row + 1]]}
    assert consumed == set(events.filter(pl.col("user_id") == u)["item_id"])
