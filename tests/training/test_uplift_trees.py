"""The gradient-boosted S-learner (training.uplift.trees): it recovers a known heterogeneous
effect, and its ONNX graph (skl2onnx trees inside the arm-batching wrapper) gives what
scikit-learn gives, missing values included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from training.uplift.candidates import GBDT_S_LEARNER, fit_candidate
from training.uplift.learners import MLPConfig
from training.uplift.trees import TreeConfig, fit_tree_s_learner


def _campaign(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Email lifts conversion by 0.3 where x0 > 0 and not at all elsewhere; the discount lowers
    it by 0.15 everywhere (sleeping dogs); x1 drives the base rate only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    arm = rng.integers(0, 3, n)
    base = 0.2 + 0.1 * np.tanh(x[:, 1])
    p = base + np.where(arm == 1, 0.3 * (x[:, 0] > 0), 0.0) - np.where(arm == 2, 0.15, 0.0)
    y = (rng.random(n) < np.clip(p, 0, 1)).astype(np.int64)
    x[rng.random(n) < 0.1, 2] = np.nan  # a column with missing values, as customer tables have
    return x, arm, y


def test_recovers_a_known_heterogeneous_effect() -> None:
    x, arm, y = _campaign(12000, 0)
    model = fit_tree_s_learner(x, arm, y, 2, TreeConfig(seed=0))
    probe = np.zeros((2, 4), dtype=np.float32)
    probe[0, 0], probe[1, 0] = 1.0, -1.0
    uplift = model.predict(probe)
    assert uplift.shape == (2, 2)
    assert 0.15 < uplift[0, 0] - uplift[1, 0] < 0.45  # email: 0.3 more where x0 > 0
    assert abs(uplift[1, 0]) < 0.1  # ... and nothing elsewhere
    assert (uplift[:, 1] < -0.05).all()  # the discount hurts everyone


def test_the_graph_gives_what_scikit_learn_gives(tmp_path: Path) -> None:
    x, arm, y = _campaign(4000, 1)
    # Two bagged classifiers: the graph averages their probabilities as predict does.
    fitted = fit_candidate(GBDT_S_LEARNER, x, arm, y, 2, MLPConfig(), TreeConfig(max_iter=80), 2)
    rows, _, _ = _campaign(700, 2)
    error = fitted.write_onnx(tmp_path / "model.onnx", "features", "uplift", rows)
    assert error < 1e-4
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["uplift"]
    (got,) = session.run(None, {"features": rows})
    assert got.shape == (700, 2) and np.isnan(rows[:, 2]).any()
    np.testing.assert_allclose(got, fitted.predict(rows), atol=1e-5)
    # One row and many rows: the arm batching is by the batch's own size.
    (one,) = session.run(None, {"features": rows[:1]})
    np.testing.assert_allclose(one, got[:1], atol=1e-6)
