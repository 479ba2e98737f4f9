"""The conversion model: the simulator's pCVR oracle, ESMM's loss and towers, and what the
trainer reports and ships (pCVR beside pCTR in every CTR bundle's graph)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import torch

from training import metrics
from training.cvr import ece_against
from training.examples import ctr_examples
from training.models.esmm import ESMM, esmm_loss, log1mexp
from training.simulate import GroundTruth, SimulatorConfig, item_index, simulate, user_index


def test_purchases_follow_the_oracle_pcvr() -> None:
    """The purchase rate among clicks matches the mean oracle pCVR of the clicked
    impressions, and the oracle ranks purchases well above chance."""
    events, _, _, truth = simulate(SimulatorConfig(users=400, items=100, days=10, seed=3))
    rows = ctr_examples(events.lazy(), conversions=True).filter(pl.col("label") == 1).collect()
    p = truth.purchase_probability(user_index(rows["user_id"]), item_index(rows["item_id"]))
    bought = rows["converted"].to_numpy()
    assert bought.sum() > 500
    # Binomial noise on ~2k clicks is ~0.011: the rate must sit within 3 standard errors.
    se = np.sqrt(p.mean() * (1 - p.mean()) / len(p))
    assert abs(bought.mean() - p.mean()) < 3 * se
    assert metrics.auc(bought, p) > 0.7


def test_conversion_label_needs_the_click() -> None:
    """``converted`` is 1 only where the same page view clicked and bought the item."""
    ts = pl.datetime(2026, 1, 1, time_zone="UTC")
    events = pl.DataFrame(
        {
            "user_id": ["u", "u", "u", "u", "u"],
            "item_id": ["a", "b", "a", "a", "b"],
            "event": ["impression", "impression", "click", "purchase", "purchase"],
            "request_id": ["r1", "r1", "r1", "r1", "r1"],
        }
    ).with_columns(ts.alias("ts"))
    out = ctr_examples(events.lazy(), conversions=True).sort("item_id").collect()
    assert out["label"].to_list() == [1, 0]
    # b was bought without a logged click: not a click-and-purchase.
    assert out["converted"].to_list() == [1, 0]


def test_log1mexp_matches_the_direct_formula() -> None:
    x = torch.tensor([-1e-6, -0.1, -0.69, -0.7, -5.0, -40.0], dtype=torch.float64)
    assert torch.allclose(log1mexp(x), torch.log(1 - torch.exp(x)), rtol=1e-6)


def test_esmm_loss_is_the_two_loglosses() -> None:
    """Against the probabilities computed directly: logloss(pCTR, click) + logloss(pCTR x
    pCVR, click and purchase)."""
    g = torch.Generator().manual_seed(0)
    ctr, cvr = torch.randn(64, generator=g), torch.randn(64, generator=g)
    click = (torch.rand(64, generator=g) < 0.4).float()
    converted = click * (torch.rand(64, generator=g) < 0.5).float()
    p_ctr, p_ctcvr = torch.sigmoid(ctr), torch.sigmoid(ctr) * torch.sigmoid(cvr)
    bce = torch.nn.functional.binary_cross_entropy
    want = bce(p_ctr, click) + bce(p_ctcvr, converted)
    assert torch.allclose(esmm_loss(ctr, cvr, click, converted), want, atol=1e-5)


def test_cvr_tower_ignores_the_position() -> None:
    """With a position field, pCVR is the same in every slot (the position changes whether an
    ad is seen, not what a click is worth), while pCTR depends on it."""
    torch.manual_seed(0)
    model = ESMM(1000, 3, 2, position_field=2)
    torch.nn.init.normal_(model.ctr.examination.weight)
    cat = torch.tensor([[5, 9, 1], [5, 9, 2]])
    num = torch.zeros(2, 2)
    with torch.no_grad():
        ctr, cvr = model(cat, num)
    assert torch.allclose(cvr[0], cvr[1], rtol=1e-6, atol=0)
    assert abs(float(ctr[0] - ctr[1])) > 1e-3


def test_ece_against_the_truth() -> None:
    p = np.array([0.1, 0.1, 0.55, 0.55])
    assert ece_against(p, p) == 0.0
    # Bin [0.1, 0.2): truth 0.2 vs 0.1; bin [0.5, 0.6): truth 0.45 vs 0.55 -> mean gap 0.1.
    assert ece_against(np.array([0.2, 0.2, 0.45, 0.45]), p) == pytest.approx(0.1)


def test_report_has_pcvr_against_its_baselines(trained_repo: Path) -> None:
    """report.json holds the ESMM's pCVR (clicked test rows) and pCTCVR (all test rows) AUC
    and ECE beside the oracle, the clicked-only model and the base rate, on the same rows."""
    report = json.loads((trained_repo / "report.json").read_text())
    cvr = report["cvr"]
    assert cvr["shipped_in"] == "ctr"
    esmm = cvr["models"]["esmm"]
    for name in ("oracle", "clicked_only", "base_rate"):
        base = cvr["baselines"][name]
        assert base["purchase_rate"] == esmm["purchase_rate"]  # the same rows
    for key in ("pcvr_auc", "pcvr_ece", "pctcvr_auc", "pctcvr_ece", "pcvr_ece_vs_oracle"):
        assert 0.0 <= esmm[key] <= 1.0
    oracle = cvr["baselines"]["oracle"]
    # On the tiny log (~1k clicked training rows) the model must still learn something real.
    assert esmm["pcvr_auc"] > 0.55
    assert esmm["pctcvr_auc"] > 0.6
    assert oracle["pcvr_auc"] > esmm["pcvr_auc"] - 0.02
    assert "## Conversion" in (trained_repo / "report.md").read_text()


def test_ctr_bundle_graph_gives_pcvr(trained_repo: Path) -> None:
    """Every CTR bundle's graph has outputs pctr and pcvr (both probabilities) and its
    manifest says so; the pCVR is the same whatever the position."""
    bundles = sorted(p for p in trained_repo.glob("ctr*/1"))
    assert bundles
    for bundle in bundles:
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert [o["name"] for o in manifest["onnx"]["outputs"]] == ["pctr", "pcvr"]
        assert manifest["cvr"]["model"] == "esmm"
        session = ort.InferenceSession(str(bundle / "model.onnx"))
        assert [o.name for o in session.get_outputs()] == ["pctr", "pcvr"]
        features = manifest["features"]
        n_cat, n_num = len(features["categorical"]), len(features["numeric"])
        rng = np.random.default_rng(0)
        cat = rng.integers(0, features["n_buckets"], (16, n_cat)).astype(np.int64)
        num = rng.normal(size=(16, n_num)).astype(np.float32)
        pctr, pcvr = session.run(None, {"cat": cat, "num": num})
        assert ((pcvr > 0) & (pcvr < 1)).all() and ((pctr > 0) & (pctr < 1)).all()
        position = [f["name"] for f in features["categorical"]].index("position")
        other = cat.copy()
        other[:, position] = (cat[:, position] + 1) % features["n_buckets"]
        _, pcvr_other = session.run(None, {"cat": other, "num": num})
        np.testing.assert_allclose(pcvr, pcvr_other, rtol=1e-6)


def test_truth_round_trips_with_pcvr(tmp_path: Path) -> None:
    _, _, _, truth = simulate(SimulatorConfig(users=20, items=10, days=1, seed=1))
    truth.save(tmp_path)
    again = GroundTruth.load(tmp_path)
    u, i = np.arange(10), np.arange(10)
    np.testing.assert_array_equal(
        truth.purchase_probability(u, i), again.purchase_probability(u, i)
    )
