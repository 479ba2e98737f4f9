"""ONNX export keeps a dynamic batch axis and reproduces PyTorch within tolerance."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.export import ParityError, export_onnx, parity_max_abs_error
from training.models.ctr import CTR_MODELS, CalibratedCTR
from training.models.mf import MatrixFactorization


@pytest.mark.parametrize("kind", sorted(CTR_MODELS))
def test_ctr_export_parity_and_dynamic_batch(tmp_path, kind: str) -> None:
    torch.manual_seed(0)
    model = CalibratedCTR(CTR_MODELS[kind](512, 4, 2), a=1.3, b=-0.2)
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
        model.platt[1] = 3.0  # the torch model drifts away from the exported graph
    inputs = {"cat": np.zeros((4, 2), dtype=np.int64), "num": np.zeros((4, 1), dtype=np.float32)}
    with pytest.raises(ParityError, match="max abs error"):
        parity_max_abs_error(model, path, inputs)
