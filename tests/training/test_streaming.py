"""The streaming trainer (training.streaming*): the same models as the in-memory path on a log
that fits, and bounded pieces on one that is cut into user partitions and chunks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import training.splits as splits
from training.cli import train
from training.streaming_synth import GeneratedLog, write_generated_log

pytestmark = pytest.mark.slow

FLAGS = [
    "--ctr-model", "lr", "--ctr-epochs", "2", "--retrieval-models", "trending",
    "--budget-minutes", "5", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("streaming") / "log"
    write_generated_log(
        path, GeneratedLog(events=40_000, users=600, items=120, days=20, sessions_per_part=1000)
    )
    return path


def _train(log: Path, out: Path, *flags: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        train, ["--events", str(log), "--out", str(out), *FLAGS, *flags], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def in_memory_repo(log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("mem") / "repo"
    _train(log, repo, "--in-memory")
    return repo


@pytest.fixture(scope="module")
def in_memory(in_memory_repo: Path) -> dict[str, Any]:
    return json.loads((in_memory_repo / "report.json").read_text())


def _features(repo: Path) -> dict[str, Any]:
    manifest = json.loads((repo / "ctr" / "1" / "manifest.json").read_text())
    return manifest["features"]


def test_streaming_trains_the_in_memory_models_on_a_log_that_fits(
    log: Path, in_memory: dict[str, Any], tmp_path: Path
) -> None:
    # One partition and one chunk: the same rows in the same batches, through the work dir.
    work = tmp_path / "work"
    streamed = _train(log, tmp_path / "repo", "--work-dir", str(work))
    assert (work / "events.parquet").exists() and (work / "ctr" / "train" / "cat.bin").exists()
    assert streamed["split"] == in_memory["split"]
    assert streamed["profiles"] == in_memory["profiles"]
    assert streamed["models"].keys() == in_memory["models"].keys()
    for name, metrics in in_memory["models"].items():
        for metric, value in metrics.items():
            assert streamed["models"][name][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), (
                name,
                metric,
            )
    assert streamed["models"]["ctr_lr"]["auc"] > 0.6


def test_streaming_in_partitions_and_chunks_builds_the_same_examples(
    log: Path, in_memory: dict[str, Any], in_memory_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    work = tmp_path / "work"
    streamed = _train(
        log, repo, "--work-dir", str(work), "--partition-events", "15000", "--chunk-rows", "8192"
    )
    assert len(list((work / "ctr" / "events").glob("users-*.parquet"))) == 3
    # The same labelled rows per part and the same feature statistics; only the batch order
    # (per chunk) differs, so the fitted model differs a little.
    assert streamed["split"] == in_memory["split"]
    features, mem_features = _features(repo), _features(in_memory_repo)
    assert features["categorical"] == mem_features["categorical"]
    assert [f["name"] for f in features["numeric"]] == [f["name"] for f in mem_features["numeric"]]
    for field, mem_field in zip(features["numeric"], mem_features["numeric"], strict=True):
        for stat in ("mean", "std", "default"):
            assert field[stat] == pytest.approx(mem_field[stat], rel=1e-9), (field["name"], stat)
    ctr, ctr_mem = streamed["models"]["ctr_lr"], in_memory["models"]["ctr_lr"]
    assert ctr["auc"] == pytest.approx(ctr_mem["auc"], abs=0.02)
    assert ctr["logloss"] == pytest.approx(ctr_mem["logloss"], abs=0.02)


@pytest.mark.parametrize("n", [1, 2, 3, 57, 1000, 5000])
@pytest.mark.parametrize("shape", ["uniform", "skewed", "constant"])
def test_bounded_quantiles_are_polars_lower_quantiles(
    n: int, shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny bounds make the histogram narrow several times before it sorts.
    monkeypatch.setattr(splits, "QUANTILE_EXACT_ROWS", 40)
    monkeypatch.setattr(splits, "QUANTILE_BUCKETS", 4)
    rng = np.random.default_rng(n)
    values = {
        "uniform": rng.integers(0, 10**15, n),
        "skewed": (rng.pareto(1.0, n) * 1000).astype(np.int64),
        "constant": np.full(n, 7),
    }[shape]
    qs = [0.0, 0.1, 0.5, 0.7, 0.8, 0.9, 1.0]
    got = splits.lower_quantiles(pl.LazyFrame({"v": values}), pl.col("v"), qs)
    assert got == [pl.Series(values).quantile(q, interpolation="lower") for q in qs]
