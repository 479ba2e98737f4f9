"""The exported serving form of a CTR model computes what the trained module computes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from training.export import export_onnx, parity_max_abs_error
from training.models.ctr import (
    CTR_MODELS,
    CalibratedCTR,
    CTRSize,
    IsotonicCalibration,
    PlattScaling,
    PositionBias,
)
from training.models.ctr_serving import FoldedFM, serving_form

N_BUCKETS, N_FIELDS, N_NUMERIC = 300, 5, 3


def _trained_like(kind: str, tower: bool, calibration: str) -> CalibratedCTR:
    """Random weights at a trained model's scale (initialisers leave FM terms near zero)."""
    torch.manual_seed(7)
    inner = CTR_MODELS[kind](N_BUCKETS, N_FIELDS - tower, N_NUMERIC, CTRSize(dim=4, mlp=(8,)))
    for parameter in inner.parameters():
        torch.nn.init.normal_(parameter, std=0.4)
    model: torch.nn.Module = inner
    if tower:
        model = PositionBias(inner, N_BUCKETS, N_FIELDS, position_field=2)
        # Extreme examination logits: the product's probability saturates at both ends.
        torch.nn.init.normal_(model.examination.weight, std=6.0)
    cal = (
        PlattScaling(0.8, -0.3)
        if calibration == "platt"
        else IsotonicCalibration(np.array([-3.0, -1.0, 0.5, 2.0]), np.array([0.02, 0.1, 0.3, 0.7]))
    )
    return CalibratedCTR(model, cal).eval()


def _rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "cat": rng.integers(0, N_BUCKETS, (n, N_FIELDS)).astype(np.int64),
        "num": (3 * rng.normal(size=(n, N_NUMERIC))).astype(np.float32),
    }


def _export(module: torch.nn.Module, path) -> onnx.ModelProto:
    example = (torch.zeros(4, N_FIELDS, dtype=torch.int64), torch.zeros(4, N_NUMERIC))
    export_onnx(module, example, ["cat", "num"], "pctr", path)
    return onnx.load(str(path))


@pytest.mark.parametrize("tower", [False, True])
@pytest.mark.parametrize("calibration", ["platt", "isotonic"])
def test_folded_fm_matches_the_trained_module(tmp_path, tower: bool, calibration: str) -> None:
    model = _trained_like("fm", tower, calibration)
    inputs = _rows(500, seed=1)
    with torch.no_grad():
        trained = model(*(torch.from_numpy(v) for v in inputs.values())).numpy()
        folded = serving_form(model)(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    # The outputs spread over (0, 1): a fold that dropped a term could not match them all.
    assert trained.std() > 0.05
    np.testing.assert_allclose(folded, trained, atol=2e-6)
    path = tmp_path / "fm.onnx"
    _export(serving_form(model), path)
    assert parity_max_abs_error(model, path, inputs) <= 1e-5


@pytest.mark.parametrize("kind", ["lr", "deepfm", "dcn"])
def test_other_models_keep_their_graph_under_the_tower(kind: str) -> None:
    model = _trained_like(kind, True, "platt")
    inputs = _rows(300, seed=2)
    with torch.no_grad():
        trained = model(*(torch.from_numpy(v) for v in inputs.values())).numpy()
        served = serving_form(model)(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    np.testing.assert_allclose(served, trained, atol=2e-6)


def _table_lookups(graph: onnx.GraphProto) -> int:
    tables = {t.name for t in graph.initializer}
    return sum(n.op_type == "Gather" and n.input[0] in tables for n in graph.node)


def test_folded_fm_graph_has_one_table_lookup_and_no_field_reductions(tmp_path) -> None:
    """What makes the fold cheap: one gather serves both towers, no ReduceSum over fields."""
    model = _trained_like("fm", True, "platt")
    folded = _export(serving_form(model), tmp_path / "f.onnx").graph
    trained = _export(model, tmp_path / "t.onnx").graph
    ops = Counter(n.op_type for n in folded.node)
    assert ops["ReduceSum"] == 0 < Counter(n.op_type for n in trained.node)["ReduceSum"]
    # The trained graph looks up three tables (examination, linear, embeddings).
    assert _table_lookups(folded) == 1 and _table_lookups(trained) == 3
    assert len(folded.node) < 0.6 * len(trained.node)


def test_folded_fm_without_numeric_fields() -> None:
    torch.manual_seed(0)
    fm = CTR_MODELS["fm"](50, 3, 0, CTRSize(dim=4))
    for parameter in fm.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    cat = torch.randint(0, 50, (64, 3))
    num = torch.zeros(64, 0)
    with torch.no_grad():
        np.testing.assert_allclose(
            FoldedFM(fm, scale=1.5, shift=-0.2)(cat, num).numpy(),
            (1.5 * fm(cat, num) - 0.2).numpy(),
            atol=1e-5,
        )
