"""No leakage, checked on what the models were given rather than on the counts the report
records: the CTR models are fitted on exactly the impressions at or before the valid cut, and
every retrieval model scored on the test part was fitted without a test-period positive."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import training.pipeline
import training.retrieval
from training.models.ctr import CTRSize
from training.pipeline import Dataset, TrainConfig, train_all
from training.retrieval import RetrievalConfig, RetrievalRun
from training.simulate import SimulatorConfig, write_simulation

pytestmark = pytest.mark.slow


def _rows(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    """The rows as one sortable byte string each (a multiset of model inputs)."""
    joined = np.concatenate([cat.view(np.uint8), num.view(np.uint8)], axis=1)
    return np.sort(np.array([r.tobytes() for r in joined]))


def test_models_are_fitted_only_on_data_before_their_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = tmp_path / "sim"
    write_simulation(sim, SimulatorConfig(users=150, items=60, days=10, seed=5))
    encoded: list[tuple[pl.DataFrame, np.ndarray, np.ndarray]] = []
    ctr_fits: list[tuple[np.ndarray, np.ndarray]] = []
    fitted_on: dict[int, tuple[str, tuple[str, ...]]] = {}
    test_tasks: set[int] = set()
    scored: list[tuple[int, int]] = []  # (fitted id, task id)

    real_encode, real_fit_ctr = training.pipeline.encode_frame, training.pipeline.fit_ctr_rows

    def encode_frame(schema: Any, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        cat, num = real_encode(schema, frame)
        encoded.append((frame, cat, num))
        return cat, num

    def fit_ctr(model: Any, rows: Any, *rest: Any, **kw: Any) -> Any:
        cat, num, _ = rows.chunk(0)
        ctr_fits.append((cat.copy(), num.copy()))
        return real_fit_ctr(model, rows, *rest, **kw)

    real_fit, real_eval_task, real_score = (
        RetrievalRun._fit,
        training.retrieval.eval_task,
        training.retrieval.score,
    )

    def _fit(self: RetrievalRun, name: str, parts: tuple[str, ...], params: Any) -> Any:
        fitted = real_fit(self, name, parts, params)
        fitted_on[id(fitted)] = (name, parts)
        return fitted

    def eval_task(data: Any, seen: tuple[str, ...], held_out: str) -> Any:
        task = real_eval_task(data, seen, held_out)
        if held_out == "test":
            test_tasks.add(id(task))
        return task

    def score(model: Any, task: Any, k: int) -> Any:
        scored.append((id(model), id(task)))
        return real_score(model, task, k)

    monkeypatch.setattr(training.pipeline, "encode_frame", encode_frame)
    monkeypatch.setattr(training.pipeline, "fit_ctr_rows", fit_ctr)
    monkeypatch.setattr(RetrievalRun, "_fit", _fit)
    monkeypatch.setattr(training.retrieval, "eval_task", eval_task)
    monkeypatch.setattr(training.retrieval, "score", score)

    config = TrainConfig(
        ctr_models=("lr", "fm"),
        ctr_size=CTRSize(dim=4, mlp=(8,), cross_layers=1),
        ctr_epochs=1,
        n_buckets=1 << 12,
        retrieval=RetrievalConfig(
            models=("trending", "mf", "ease"),
            mf_dim=8,
            mf_epochs=2,
            ease_lambdas=(50.0,),
            bootstrap=50,
            progress=False,
        ),
        progress=False,
    )
    data = Dataset(
        events=pl.scan_parquet(sim / "events.parquet"),
        items=pl.read_parquet(sim / "items.parquet"),
        users=pl.read_parquet(sim / "users.parquet"),
    )
    out = tmp_path / "repo"
    train_all(data, out, config)
    split = json.loads((out / "report.json").read_text())["split"]

    # CTR: each model's training rows are exactly the impressions at or before the valid cut.
    ((frame, cat, num),) = encoded
    valid_cut = datetime.fromisoformat(split["valid_cut"])
    before = (frame["ts"] <= valid_cut).to_numpy()
    assert 0 < before.sum() < len(before)
    want = _rows(cat[before], num[before])
    assert len(ctr_fits) >= 2
    for given_cat, given_num in ctr_fits:
        np.testing.assert_array_equal(_rows(given_cat, given_num), want)

    # Retrieval: whatever was scored on the test part never saw it.
    on_test = [fitted_on[m] for m, t in scored if t in test_tasks and m in fitted_on]
    assert {name for name, _ in on_test} >= {"mf", "ease"}
    assert all("test" not in parts for _, parts in on_test), on_test
