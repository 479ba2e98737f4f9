"""`train_all` on the tiny simulated log writes complete, evaluated, versioned bundles, the
report files, and records a leak-free split; the same seed reproduces the same metrics."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from training.bundle import next_version
from training.examples import ctr_examples
from training.models.ctr import CTRSize
from training.pipeline import Dataset, TrainConfig, train_all
from training.retrieval import RetrievalConfig

CTR_BUNDLES = ("ctr", "ctr-lr", "ctr-fm", "ctr-deepfm", "ctr-dcn")
RETRIEVAL_BUNDLES = (
    "retrieval",
    "retrieval-trending",
    "retrieval-mf",
    "retrieval-ials",
    "retrieval-ease",
    "retrieval-ease_ials",
    "retrieval-trending_ease",
    "retrieval-sasrec",
)


def manifest(repo: Path, name: str) -> dict:
    return json.loads((repo / name / "1" / "manifest.json").read_text())


def test_bundles_and_manifests(trained_repo: Path) -> None:
    report = json.loads((trained_repo / "report.json").read_text())
    shipped = {f"ctr-{report['chosen']['ctr']}", f"retrieval-{report['chosen']['retrieval']}"}
    present = [n for n in (*CTR_BUNDLES, *RETRIEVAL_BUNDLES) if n not in shipped]
    # One bundle per model type: the chosen one under the default name, the others suffixed.
    assert sorted(present) == sorted(
        p.name
        for p in trained_repo.iterdir()
        if p.is_dir() and p.name.startswith(("ctr", "retrieval"))
    )
    for name in present:
        kind = name.split("-")[0]
        assert next_version(trained_repo / name) == 2
        bundle = trained_repo / name / "1"
        m = manifest(trained_repo, name)
        assert m["name"] == name and m["version"] == 1 and m["kind"] == kind
        assert m["parity_max_abs_error"] <= 1e-4
        for rel in m["artifacts"].values():
            assert (bundle / rel).is_file()
        metrics_json = json.loads((bundle / "metrics.json").read_text())
        assert metrics_json["test"] == m["metrics"] and metrics_json["split"] == m["split"]
        session = ort.InferenceSession(
            str(bundle / m["onnx"]["file"]), providers=["CPUExecutionProvider"]
        )
        assert [i.name for i in session.get_inputs()] == [i["name"] for i in m["onnx"]["inputs"]]
        assert m["split"]["kind"] == "global_time"
        assert not list((trained_repo / name).glob(".incoming-*"))
    ctr = manifest(trained_repo, "ctr")
    assert ctr["model_type"] == report["chosen"]["ctr"]
    assert ctr["calibration"]["applied"] == "in_graph"
    assert {f["name"] for f in ctr["features"]["categorical"]} >= {
        "user_id",
        "item_id",
        "category",
        "device",
        "position",
    }
    assert 0.0 < ctr["metrics"]["auc"] <= 1.0 and ctr["metrics"]["logloss"] > 0


def test_chosen_models_are_best_on_valid(trained_repo: Path) -> None:
    report = json.loads((trained_repo / "report.json").read_text())
    ctr_valid = {k: v for k, v in report["valid"].items() if k.startswith("ctr_")}
    assert min(ctr_valid, key=lambda k: ctr_valid[k]["logloss"]) == f"ctr_{report['chosen']['ctr']}"
    # Retrieval: the best on valid, or a simpler candidate shown equivalent to it, and why.
    ret_valid = {k: v for k, v in report["valid"].items() if k.startswith("retrieval_")}
    best = max(ret_valid, key=lambda k: ret_valid[k]["recall@20"])
    chosen = f"retrieval_{report['chosen']['retrieval']}"
    why = report["why"]["retrieval"]
    assert chosen == best or "equivalent to the best" in why, why
    board = report["leaderboard"]["retrieval"]
    assert [r["name"] for r in board if r["shipped"]] == [report["chosen"]["retrieval"]]
    assert {r["name"] for r in board if r["role"] == "candidate"} == {
        k.removeprefix("retrieval_") for k in ret_valid
    }
    for row in board:
        lo, hi = row["test"]["recall@20_ci"]
        assert lo <= row["test"]["recall@20"] <= hi


def test_report_compares_models_with_baselines(trained_repo: Path) -> None:
    report = json.loads((trained_repo / "report.json").read_text())
    assert set(report) >= {"split", "models", "baselines"}
    assert set(report["models"]) == {
        "ctr_lr",
        "ctr_fm",
        "ctr_deepfm",
        "ctr_dcn",
        "retrieval_trending",
        "retrieval_mf",
        "retrieval_ials",
        "retrieval_ease",
        "retrieval_ease_ials",
        "retrieval_trending_ease",
        "retrieval_sasrec",
    }
    assert set(report["baselines"]) == {
        "ctr_base_rate",
        "ctr_oracle",
        "popularity",
        "popularity_window",
        "popularity_decay",
        "item_knn",
    }
    oracle = report["baselines"]["ctr_oracle"]["auc"]
    base_rate = report["baselines"]["ctr_base_rate"]
    n_items = pl.read_parquet(trained_repo / "retrieval" / "1" / "items.parquet").height
    for name, m in report["models"].items():
        if name.startswith("ctr_"):
            assert set(m) == {"auc", "logloss", "ece", "oracle_auc"}
            assert m["oracle_auc"] == oracle
            # Every CTR model learns something: better than the base rate (no slack), an AUC
            # clearly above chance and below the simulator's own click probabilities.
            assert m["logloss"] < base_rate["logloss"], name
            assert 0.55 < m["auc"] < oracle, name
            # Calibrated (Platt, in the graph). The bench holds 0.01 on its larger data; the
            # tiny test log's test part leaves ECE a little more noise.
            assert m["ece"] < 0.02, name
        else:
            assert set(m) == {"recall@20", "ndcg@10", "hitrate@10", "coverage"}
            # Values that only a real evaluation yields: per user NDCG@10 <= hit@10, so their
            # means too; coverage is a count of distinct items over the catalogue.
            assert 0.0 <= m["ndcg@10"] <= m["hitrate@10"] <= 1.0, name
            assert 0.0 <= m["recall@20"] <= 1.0, name
            assert m["coverage"] * n_items == pytest.approx(round(m["coverage"] * n_items)), name
            assert m["coverage"] >= 20 / n_items, name  # at least one user's full top-20
    # Popularity recommends the same items to everyone: less coverage than any personal model.
    coverage = {
        n: m["coverage"]
        for n, m in report["models"].items()
        if "coverage" in m and n != "retrieval_trending"
    }
    assert report["baselines"]["popularity"]["coverage"] < min(coverage.values())


def test_human_report_and_plots(trained_repo: Path) -> None:
    text = (trained_repo / "report.md").read_text()
    for heading in ("## Split", "## CTR", "## Retrieval", "## Profiles"):
        assert heading in text
    for name in ("lr", "fm", "deepfm", "dcn"):
        plot = trained_repo / "plots" / f"reliability_{name}.png"
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/reliability_{name}.png" in text
    assert (trained_repo / "plots" / "retrieval.png").is_file()
    assert "(shipped as `ctr`)" in text and "(shipped as `retrieval`)" in text


def test_recorded_split_is_leak_free(trained_repo: Path, sim_dir: Path) -> None:
    """The cuts train_all records separate the parts it reports, for CTR and retrieval."""
    report = json.loads((trained_repo / "report.json").read_text())
    split = report["split"]
    valid_cut = datetime.fromisoformat(split["valid_cut"])
    test_cut = datetime.fromisoformat(split["test_cut"])
    assert valid_cut <= test_cut
    events = pl.scan_parquet(sim_dir / "events.parquet")
    impressions = ctr_examples(events).collect()
    expected = {
        "train": impressions.filter(pl.col("ts") <= valid_cut).height,
        "valid": impressions.filter((pl.col("ts") > valid_cut) & (pl.col("ts") <= test_cut)).height,
        "test": impressions.filter(pl.col("ts") > test_cut).height,
    }
    assert {k: v["rows"] for k, v in split["ctr"].items()} == expected
    for name in ("ctr", "retrieval"):
        recorded = manifest(trained_repo, name)["split"]
        assert recorded["test_cut"] == split["test_cut"]
        # Retrieval tunes on a validation part as long as test's, just before it.
        cut = split.get("retrieval_valid_cut", split["valid_cut"]) if name == "retrieval" else None
        assert recorded["valid_cut"] == (cut or split["valid_cut"])
    assert datetime.fromisoformat(split["retrieval_valid_cut"]) < valid_cut
    assert split["retrieval_valid_fraction"] == split["test_fraction"]
    # No test-period positive reached the retrieval model's training input.
    first = (
        events.filter(pl.col("event").is_in(["click", "purchase"]))
        .group_by("user_id", "item_id")
        .agg(pl.col("ts").min())
        .collect()
    )
    assert split["retrieval"]["test"]["rows"] == first.filter(pl.col("ts") > test_cut).height


def test_retrieval_artifacts_are_consistent(trained_repo: Path, sim_dir: Path) -> None:
    for name in ("retrieval-mf", "retrieval-ease"):
        path = name if (trained_repo / name).exists() else "retrieval"
        bundle = trained_repo / path / "1"
        m = manifest(trained_repo, path)
        users = pl.read_parquet(bundle / "users.parquet")
        items = pl.read_parquet(bundle / "items.parquet")
        user_emb = np.load(bundle / "user_embeddings.npy", allow_pickle=False)
        item_emb = np.load(bundle / "item_embeddings.npy", allow_pickle=False)
        assert user_emb.shape[0] == users.height and item_emb.shape[0] == items.height
        assert user_emb.shape[1] == item_emb.shape[1] == m["embedding_dim"]
        assert user_emb.dtype == np.float32 and item_emb.dtype == np.float32
        assert m["latent_dim"] <= m["embedding_dim"]
        indptr = np.load(bundle / "consumed_indptr.npy")
        indices = np.load(bundle / "consumed_indices.npy")
        events = pl.read_parquet(sim_dir / "events.parquet").filter(
            pl.col("event").is_in(["click", "purchase"])
        )
        u = users["user_id"][0]
        row = users.filter(pl.col("user_id") == u)["row"][0]
        consumed = {items["item_id"][int(i)] for i in indices[indptr[row] : indptr[row + 1]]}
        assert consumed == set(events.filter(pl.col("user_id") == u)["item_id"])
        # The ONNX scorer is the inner product of the shipped tables.
        session = ort.InferenceSession(
            str(bundle / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        ui = np.arange(min(5, users.height), dtype=np.int64)
        ii = np.arange(len(ui), dtype=np.int64)
        (score,) = session.run(None, {"user_index": ui, "item_index": ii})
        np.testing.assert_allclose(
            score, (user_emb[ui] * item_emb[ii]).sum(1), rtol=1e-5, atol=1e-5
        )


@pytest.fixture(scope="module")
def small_data(sim_dir: Path) -> Dataset:
    return Dataset(
        events=pl.scan_parquet(sim_dir / "events.parquet"),
        items=pl.read_parquet(sim_dir / "items.parquet"),
        users=pl.read_parquet(sim_dir / "users.parquet"),
    )


SMALL = TrainConfig(
    ctr_models=("deepfm",),
    ctr_size=CTRSize(dim=4, mlp=(8,)),
    ctr_epochs=1,
    calibration="isotonic",
    n_buckets=1 << 12,
    retrieval=RetrievalConfig(
        models=("mf", "ease"), mf_dim=8, mf_epochs=2, ease_lambdas=(100.0,), progress=False
    ),
    split="per-user",
    progress=False,
)


@pytest.mark.slow  # trains everything twice
def test_same_seed_same_bundle_metrics(tmp_path: Path, small_data: Dataset) -> None:
    first = train_all(small_data, tmp_path / "a", SMALL)
    second = train_all(small_data, tmp_path / "b", SMALL)
    assert first["models"] == second["models"] and first["baselines"] == second["baselines"]
    for name in ("ctr", "retrieval", "retrieval-mf", "retrieval-ease"):
        if (tmp_path / "a" / name).exists():
            assert (
                manifest(tmp_path / "a", name)["metrics"]
                == manifest(tmp_path / "b", name)["metrics"]
            )
    m = manifest(tmp_path / "a", "ctr")
    assert m["calibration"]["method"] == "isotonic"
    assert m["split"]["kind"] == "per_user" and m["split"]["test_fraction"] == 0.2
    # No ground truth given: no oracle.
    assert "ctr_oracle" not in first["baselines"]
