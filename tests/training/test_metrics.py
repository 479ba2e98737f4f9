"""Metrics against identity cases, hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss, roc_auc_score

from training.metrics import (
    METRICS,
    Relevance,
    auc,
    bootstrap_interval,
    bootstrap_means,
    bootstrap_se,
    coverage,
    ece,
    evaluate_classification,
    evaluate_ranking,
    hitrate_at_k,
    hitrate_per_user,
    logloss,
    ndcg_at_k,
    ndcg_per_user,
    precision_at_k,
    precision_per_user,
    recall_at_k,
    recall_per_user,
    reliability_curve,
)

# --- classification ---------------------------------------------------------------------------


def test_auc_hand_values() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # Pairs (pos, neg): (0.35, 0.1) yes, (0.35, 0.4) no, (0.8, both) yes -> 3/4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # A tie between a positive and a negative counts one half: (1 + 0.5) / 2.
    assert auc([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_auc_and_logloss_match_sklearn() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 5_000)
    # Rounded so that many scores tie.
    p = np.clip(np.round(0.3 * y + rng.uniform(0, 0.7, y.size), 2), 0.0, 1.0)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=1e-9)


def test_logloss_hand_value() -> None:
    assert logloss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    # Clipping keeps a confident mistake finite.
    assert logloss([1], [0.0]) == pytest.approx(-math.log(1e-15))


def test_ece_hand_values() -> None:
    y = [0, 1, 1, 0]
    p = [0.1, 0.2, 0.85, 0.95]
    # Ten equal-width bins, one row each: (0.1 + 0.8 + 0.15 + 0.95) / 4.
    assert ece(y, p) == pytest.approx(0.5)
    # Two bins: {0.1, 0.2} mean 0.15 vs rate 0.5; {0.85, 0.95} mean 0.9 vs rate 0.5.
    assert ece(y, p, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.4)
    assert ece(y, p, n_bins=2, strategy="quantile") == pytest.approx(0.375)
    # Perfectly calibrated: every prediction 0.25, one positive in four.
    assert ece([1, 0, 0, 0], [0.25] * 4) == 0.0
    assert ece([1, 0, 0, 0], [0.25] * 4, strategy="quantile") == 0.0


def test_ece_equal_mass_bins_split_a_concentrated_distribution() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 0.08, 10_000)
    y = rng.uniform(size=p.size) < p
    uniform = reliability_curve(y, p, n_bins=10)
    equal_mass = reliability_curve(y, p, n_bins=10, strategy="quantile")
    assert uniform.counts.tolist() == [p.size]  # everything in [0, 0.1)
    assert equal_mass.counts.size == 10 and np.all(np.abs(equal_mass.counts - 1_000) <= 1)


def test_reliability_curve_matches_sklearn() -> None:
    rng = np.random.default_rng(11)
    p = rng.uniform(size=2_000)
    y = rng.uniform(size=p.size) < p**2
    for strategy in ("uniform", "quantile"):
        curve = reliability_curve(y, p, n_bins=8, strategy=strategy)
        frac, mean = calibration_curve(y, p, n_bins=8, strategy=strategy)
        np.testing.assert_allclose(curve.fraction_positive, frac)
        np.testing.assert_allclose(curve.mean_predicted, mean)
        assert curve.counts.sum() == p.size
    assert set(curve.to_dict()) == {"bin_edges", "mean_predicted", "fraction_positive", "counts"}


def test_classification_input_errors() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="must be 1-D and match"):
        logloss([0, 1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ece([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError, match="unknown binning"):
        ece([0, 1], [0.2, 0.3], strategy="kmeans")  # type: ignore[arg-type]


# --- ranking ----------------------------------------------------------------------------------

TOP = np.array([[1, 2, 3], [4, -1, -1], [7, 8, 9]])
RELEVANT = [np.array([2, 5]), np.array([9]), np.array([], dtype=np.int64)]


def test_ranking_hand_values() -> None:
    # User 0: one hit at rank 2 of 2 relevant; user 1: no hit; user 2 has nothing held out.
    assert recall_at_k(TOP, RELEVANT) == pytest.approx((1 / 2 + 0) / 2)
    assert precision_at_k(TOP, RELEVANT) == pytest.approx((1 / 3 + 0) / 2)
    assert hitrate_at_k(TOP, RELEVANT) == pytest.approx(0.5)
    dcg = 1 / math.log2(3)
    assert ndcg_at_k(TOP, RELEVANT) == pytest.approx((dcg / (1 + dcg) + 0) / 2)
    # Cut at k=1: user 0's hit at rank 2 no longer counts.
    assert recall_at_k(TOP, RELEVANT, k=1) == 0.0
    assert ndcg_at_k(TOP, RELEVANT, k=1) == 0.0


def test_ranking_identity_case() -> None:
    relevant = [np.array([5, 3, 9]), np.array([0, 1, 2])]
    top = np.array([[3, 9, 5], [2, 0, 1]])
    for metric in (recall_at_k, precision_at_k, hitrate_at_k, ndcg_at_k):
        assert metric(top, relevant) == 1.0


def test_recall_divides_by_all_relevant_items() -> None:
    # Two hits out of five relevant with k=2: recall 0.4, not hits / min(k, |relevant|) = 1.
    top = np.array([[10, 11]])
    relevant = [np.array([10, 11, 12, 13, 14])]
    assert recall_at_k(top, relevant) == pytest.approx(0.4)
    # The ideal DCG only has k slots, so a perfect top 2 still has NDCG 1.
    assert ndcg_at_k(top, relevant) == pytest.approx(1.0)


def test_csr_and_lists_agree_and_duplicates_count_once() -> None:
    csr = Relevance(np.array([0, 2, 3, 3]), np.array([2, 5, 9]))
    for metric in (recall_at_k, precision_at_k, hitrate_at_k, ndcg_at_k):
        assert metric(TOP, csr) == metric(TOP, RELEVANT)
    doubled = [np.array([2, 2, 5]), np.array([9, 9]), np.array([], dtype=np.int64)]
    assert recall_at_k(TOP, doubled) == recall_at_k(TOP, RELEVANT)


def test_wide_item_ids_do_not_overflow() -> None:
    big = np.array([[2**62, 3], [5, 2**61]])
    assert recall_at_k(big, [np.array([2**62]), np.array([2**61, 7])]) == pytest.approx(0.75)


def test_ranking_input_errors() -> None:
    with pytest.raises(ValueError, match="recommends an item twice"):
        recall_at_k(np.array([[1, 1]]), [np.array([1])])
    with pytest.raises(ValueError, match="3 rows but relevance has 2"):
        recall_at_k(TOP, RELEVANT[:2])
    with pytest.raises(ValueError, match="no user has relevant"):
        recall_at_k(TOP, [np.array([], dtype=np.int64)] * 3)
    with pytest.raises(ValueError, match="2-D integer"):
        recall_at_k(np.array([1.0, 2.0]), [np.array([1])])
    with pytest.raises(ValueError, match="indptr"):
        Relevance(np.array([0, 3]), np.array([1, 2]))


def test_coverage() -> None:
    # Distinct recommended ids {1, 2, 3, 4, 7, 8, 9} of a 14-item catalogue; -1 is padding.
    assert coverage(TOP, n_items=14) == pytest.approx(7 / 14)
    assert coverage(TOP, n_items=14, k=1) == pytest.approx(3 / 14)


def test_evaluate_by_name() -> None:
    report = evaluate_ranking(TOP, RELEVANT, ["recall@3", "ndcg@1", "hitrate@3", "coverage"], 14)
    assert report == {
        "recall@3": recall_at_k(TOP, RELEVANT, 3),
        "ndcg@1": ndcg_at_k(TOP, RELEVANT, 1),
        "hitrate@3": 0.5,
        "coverage": 0.5,
    }
    with pytest.raises(ValueError, match="needs a cutoff"):
        evaluate_ranking(TOP, RELEVANT, ["recall"])
    with pytest.raises(ValueError, match="unknown ranking metric"):
        evaluate_ranking(TOP, RELEVANT, ["mrr@10"])
    scores = evaluate_classification([0, 1, 1, 0], [0.1, 0.2, 0.85, 0.95])
    assert scores == {
        "auc": 0.5,
        "logloss": pytest.approx(logloss([0, 1, 1, 0], [0.1, 0.2, 0.85, 0.95])),
        "ece": pytest.approx(0.5),
    }
    assert set(METRICS) >= {
        "auc",
        "logloss",
        "ece",
        "reliability_curve",
        "recall",
        "ndcg",
        "hitrate",
        "coverage",
    }


def _reference(top: np.ndarray, relevant: list[np.ndarray], k: int) -> dict[str, float]:
    """Per-user loops written straight from the definitions."""
    recalls, precisions, hits_any, ndcgs = [], [], [], []
    for row, rel in zip(top, relevant, strict=True):
        truth = set(rel.tolist())
        if not truth:
            continue
        ranked = row[:k].tolist()
        gains = [1.0 if i in truth and i >= 0 else 0.0 for i in ranked] + [0.0] * (k - len(ranked))
        hits = sum(gains)
        recalls.append(hits / len(truth))
        precisions.append(hits / k)
        hits_any.append(float(hits > 0))
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(truth))))
        ndcgs.append(dcg / ideal)
    return {
        "recall": float(np.mean(recalls)),
        "precision": float(np.mean(precisions)),
        "hitrate": float(np.mean(hits_any)),
        "ndcg": float(np.mean(ndcgs)),
    }


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n_users=st.integers(1, 6), width=st.integers(1, 6), k=st.integers(1, 8))
def test_ranking_metrics_match_reference(
    data: st.DataObject, n_users: int, width: int, k: int
) -> None:
    rows = []
    for _ in range(n_users):
        ids = data.draw(st.lists(st.integers(0, 9), min_size=0, max_size=width, unique=True))
        rows.append(ids + [-1] * (width - len(ids)))
    top = np.array(rows, dtype=np.int64)
    relevant = [
        np.array(data.draw(st.lists(st.integers(0, 9), max_size=5)), dtype=np.int64)
        for _ in range(n_users)
    ]
    if not any(r.size for r in relevant):
        relevant[0] = np.array([0])
    expected = _reference(top, relevant, k)
    assert recall_at_k(top, relevant, k) == pytest.approx(expected["recall"])
    assert precision_at_k(top, relevant, k) == pytest.approx(expected["precision"])
    assert hitrate_at_k(top, relevant, k) == pytest.approx(expected["hitrate"])
    assert ndcg_at_k(top, relevant, k) == pytest.approx(expected["ndcg"])
    assert 0.0 <= ndcg_at_k(top, relevant, k) <= 1.0


def test_bootstrap_of_a_mean() -> None:
    constant = np.full(50, 0.25)
    assert bootstrap_interval(constant) == (0.25, 0.25) and bootstrap_se(constant) == 0.0
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 400)
    lo, hi = bootstrap_interval(x, resamples=2000, seed=3)
    assert lo < x.mean() < hi
    # The standard error of a mean of 400 unit-variance draws is about 1/20.
    assert abs(bootstrap_se(x, resamples=2000, seed=3) - x.std() / 20) < 0.01
    assert bootstrap_means(x, resamples=7).shape == (7,)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_se([])


def test_per_user_values_average_to_the_report_metrics() -> None:
    top = np.array([[1, 2, 3], [4, 5, 6]])
    relevant = [[1, 9], [6]]
    assert np.allclose(recall_per_user(top, relevant, 3), [0.5, 1.0])
    assert recall_at_k(top, relevant, 3) == 0.75
    assert np.allclose(ndcg_per_user(top, relevant, 3).mean(), ndcg_at_k(top, relevant, 3))
    assert hitrate_per_user(top, relevant, 1).tolist() == [1.0, 0.0]
    assert np.allclose(precision_per_user(top, relevant, 3), [1 / 3, 1 / 3])
