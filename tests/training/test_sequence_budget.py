"""The sequence model's time budget covers its refit too: the epoch search spends at most
half of ``sequence_minutes`` and the refit on train + valid stops when the rest is spent."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from training.retrieval import Interactions, RetrievalConfig, RetrievalRun
from training.sequence import SequenceConfig

TINY = SequenceConfig(dim=8, max_len=6, heads=2, layers=1, max_epochs=6, eval_every=1)


def _interactions() -> Interactions:
    """40 users walking a 12-item catalogue in order, one item a day, 12 days: the last two
    days are valid and test."""
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 12
    parts: dict[str, tuple[list[int], list[int], list[float]]] = {
        p: ([], [], []) for p in ("train", "valid", "test")
    }
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        for day in range(n_items):
            part = "train" if day < 10 else "valid" if day == 10 else "test"
            parts[part][0].append(u)
            parts[part][1].append((start + day) % n_items)
            parts[part][2].append(1.7e9 + 86_400.0 * day + u)
    return Interactions(
        users=pl.DataFrame({"user_id": [f"u{u}" for u in range(n_users)], "row": range(n_users)}),
        items=pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "row": range(n_items)}),
        parts={p: (np.array(u), np.array(i)) for p, (u, i, _) in parts.items()},
        times={p: np.array(t) for p, (_, _, t) in parts.items()},
    )


def _refit_log(minutes: float | None, caplog: pytest.LogCaptureFixture) -> list[str]:
    config = RetrievalConfig(models=("sasrec",), sequence=TINY, sequence_minutes=minutes)
    run = RetrievalRun(_interactions(), config)
    run.tune_sasrec()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="training.sequence"):
        run.fit("sasrec", ("train", "valid"), {"epochs": 5})
    return [r.getMessage() for r in caplog.records]


def test_the_refit_stops_when_the_sequence_budget_is_spent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No budget: the refit runs the 5 epochs asked for.
    assert not any("time budget spent" in m for m in _refit_log(None, caplog))
    # A budget the search has already spent: the refit stops after its first epoch instead
    # of running the epochs found, unbudgeted.
    assert "sasrec: time budget spent after 1 epochs" in _refit_log(0.0, caplog)
