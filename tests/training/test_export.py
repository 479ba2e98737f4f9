"""ONNX export keeps a dynamic batch axis and reproduces PyTorch within tolerance."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.export import ParityError, export_onnx, parity_max_abs_error
from training.fit import fit_isotonic
from training.models.ctr import (
    CTR_MODELS,
    CalibratedCTR,
    CTRSize,
    IsotonicCalibration,
    PlattScaling,
    PositionBias,
)
from training.models.mf import EmbeddingScorer, MatrixFactorization

pytestmark = pytest.mark.slow  # exports trained torch models to ONNX, one after the other

CALIBRATIONS = {
    "platt": lambda: PlattScaling(1.3, -0.2),
    "isotonic": lambda: IsotonicCalibration(
        np.array([-2.0, -0.5, 0.0, 1.5]), np.array([0.01, 0.1, 0.1, 0.6])
    ),
}


# Every model type with Platt, and isotonic (a different graph tail) on one of them: each
# dynamo export costs seconds.
@pytest.mark.parametrize(
    ("kind", "calibration"), [(k, "platt") for k in sorted(CTR_MODELS)] + [("fm", "isotonic")]
)
def test_ctr_export_parity_and_dynamic_batch(tmp_path, kind: str, calibration: str) -> None:
    torch.manual_seed(0)
    size = CTRSize(dim=4, mlp=(16, 8), cross_layers=2)
    model = CalibratedCTR(CTR_MODELS[kind](512, 4, 2, size), CALIBRATIONS[calibration]())
    cat, num = torch.randint(0, 512, (8, 4)), torch.randn(8, 2)
    path = tmp_path / "m.onnx"
    export_onnx(model, (cat, num), ["cat", "num"], "pctr", path)
    rng = np.random.default_rng(1)
    for batch in (1, 3, 257):
        inputs = {
            "cat": rng.integers(0, 512, (batch, 4)).astype(np.int64),
            "num": rng.normal(size=(batch, 2)).astype(np.float32),
        }
        assert parity_max_abs_error(model, path, inputs) <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"


def test_position_tower_export_parity(tmp_path) -> None:
    torch.manual_seed(0)
    relevance = CTR_MODELS["deepfm"](512, 3, 2, CTRSize(dim=4, mlp=(8,)))
    tower = PositionBias(relevance, 512, 4, position_field=3)
    # Extreme examination and relevance logits: the product's logit must stay finite.
    torch.nn.init.normal_(tower.examination.weight, std=8.0)
    model = CalibratedCTR(tower, PlattScaling(0.9, 0.1))
    cat, num = torch.randint(0, 512, (8, 4)), torch.randn(8, 2)
    path = tmp_path / "pal.onnx"
    export_onnx(model, (cat, num), ["cat", "num"], "pctr", path)
    rng = np.random.default_rng(2)
    inputs = {
        "cat": rng.integers(0, 512, (300, 4)).astype(np.int64),
        "num": (10 * rng.normal(size=(300, 2))).astype(np.float32),
    }
    assert parity_max_abs_error(model, path, inputs) <= 1e-5


def test_mf_export_matches_embeddings(tmp_path) -> None:
    torch.manual_seed(0)
    model = MatrixFactorization(10, 20, 4)
    path = tmp_path / "mf.onnx"
    export_onnx(
        model,
        (torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64)),
        ["user_index", "item_index"],
        "score",
        path,
    )
    u = np.arange(10, dtype=np.int64)
    i = (np.arange(10, dtype=np.int64) * 3) % 20
    assert parity_max_abs_error(model, path, {"user_index": u, "item_index": i}) <= 1e-5
    users, items = (t.numpy() for t in model.export_embeddings())
    with torch.no_grad():
        direct = model(torch.from_numpy(u), torch.from_numpy(i)).numpy()
    np.testing.assert_allclose(
        np.einsum("nd,nd->n", users[u], items[i]), direct, rtol=1e-5, atol=1e-6
    )


def test_largest_shipped_config_exports(tmp_path) -> None:
    """The serving benchmark's model: 26 categorical x 16-d, 13 numeric, a 400-400 MLP."""
    torch.manual_seed(0)
    size = CTRSize(dim=16, mlp=(400, 400))
    for kind in ("deepfm",):
        model = CalibratedCTR(CTR_MODELS[kind](1 << 12, 26, 13, size), PlattScaling(0.9, 0.1))
        path = tmp_path / f"{kind}.onnx"
        export_onnx(
            model,
            (torch.zeros(2, 26, dtype=torch.int64), torch.zeros(2, 13)),
            ["cat", "num"],
            "pctr",
            path,
        )
        rng = np.random.default_rng(2)
        inputs = {
            "cat": rng.integers(0, 1 << 12, (64, 26)).astype(np.int64),
            "num": rng.normal(size=(64, 13)).astype(np.float32),
        }
        assert parity_max_abs_error(model, path, inputs) <= 1e-4


def test_isotonic_layer_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-2 * logits))).astype(np.float32)
    x, y = fit_isotonic(logits, labels)
    layer = IsotonicCalibration(x, y)
    from sklearn.isotonic import IsotonicRegression

    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(logits, labels)
    probe = np.concatenate([np.linspace(-5, 5, 101), logits[:50]])
    with torch.no_grad():
        got = layer(torch.from_numpy(probe.astype(np.float32))).numpy()
    expected = np.clip(reference.predict(probe), 1e-6, 1 - 1e-6)
    # float32 knots and ramps: within the export parity tolerance.
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Monotone non-decreasing in the logit, as calibration must be.
    assert np.all(np.diff(got[:101]) >= -1e-7)


def test_embedding_scorer_export(tmp_path) -> None:
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    scorer = EmbeddingScorer(users, items)
    path = tmp_path / "s.onnx"
    # Two distinct example tensors: the exporter merges inputs given the same tensor object.
    example = (torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    export_onnx(scorer, example, ["user_index", "item_index"], "score", path)
    u = rng.integers(0, 7, 50).astype(np.int64)
    i = rng.integers(0, 11, 50).astype(np.int64)
    assert parity_max_abs_error(scorer, path, {"user_index": u, "item_index": i}) <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (score,) = session.run(None, {"user_index": u, "item_index": i})
    np.testing.assert_allclose(score, (users[u] * items[i]).sum(1), rtol=1e-5, atol=1e-5)


def test_parity_failure_is_reported(tmp_path) -> None:
    model = CalibratedCTR(CTR_MODELS["lr"](16, 2, 1))
    path = tmp_path / "m.onnx"
    export_onnx(
        model,
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 1)),
        ["cat", "num"],
        "pctr",
        path,
    )
    with torch.no_grad():
        model.calibration.platt[1] = 3.0  # the torch model drifts away from the exported graph
    inputs = {"cat": np.zeros((4, 2), dtype=np.int64), "num": np.zeros((4, 1), dtype=np.float32)}
    with pytest.raises(ParityError, match="max abs error"):
        parity_max_abs_error(model, path, inputs)
