"""Closed-form and iterative fits against hand-computed or directly solved references."""

from __future__ import annotations

import numpy as np
import torch

from training.fit import FitConfig, fit_ctr, fit_ease, fit_ials, fit_item_knn, fit_platt
from training.models.ctr import LogisticRegression
from training.retrieval import Fitted, blend

# Three users, four items: u0 {0, 1}, u1 {1, 2}, u2 {0, 1, 3}.
USERS = np.array([0, 0, 1, 1, 2, 2, 2])
ITEMS = np.array([0, 1, 1, 2, 0, 1, 3])


def test_item_knn_is_cosine_of_co_occurrence() -> None:
    sim = fit_item_knn(USERS, ITEMS, 3, 4, neighbours=0)
    # Items 0 and 1 co-occur for u0 and u2; |0| = 2 users, |1| = 3 users: 2 / sqrt(6).
    assert np.isclose(sim[0, 1], 2 / np.sqrt(6))
    # Items 1 and 2 co-occur once; |2| = 1: 1 / sqrt(3).
    assert np.isclose(sim[1, 2], 1 / np.sqrt(3))
    assert sim[0, 2] == 0.0 and np.all(np.diag(sim) == 0.0)
    np.testing.assert_allclose(sim, sim.T)
    # Keeping one neighbour per target item leaves its strongest source only.
    pruned = fit_item_knn(USERS, ITEMS, 3, 4, neighbours=1)
    assert (pruned[:, 1] > 0).sum() == 1 and pruned[0, 1] == sim[:, 1].max()


def test_ease_solves_its_constrained_least_squares() -> None:
    reg = 0.5
    b = fit_ease(USERS, ITEMS, 3, 4, reg)
    x = np.zeros((3, 4))
    x[USERS, ITEMS] = 1.0
    assert np.allclose(np.diag(b), 0.0)
    # Column j is the ridge regression of item j on the other items (diag(B) = 0 constraint).
    for j in range(4):
        others = [k for k in range(4) if k != j]
        a = x[:, others]
        direct = np.linalg.solve(a.T @ a + reg * np.eye(3), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], direct, atol=1e-10)


def test_ials_matches_an_exact_weighted_least_squares_step() -> None:
    # With one iteration from a known item side, the user side must be the exact solution of
    # the confidence-weighted ridge problem, computed here densely.
    reg, alpha, dim = 0.3, 4.0, 2
    u, v = fit_ials(USERS, ITEMS, 3, 4, dim=dim, reg=reg, alpha=alpha, iterations=1, progress=False)
    x = np.zeros((3, 4))
    x[USERS, ITEMS] = 1.0
    for r in range(4):  # the item side, solved last, against the final user factors
        c = 1.0 + alpha * x[:, r]
        a = u.T @ (c[:, None] * u) + reg * np.eye(dim)
        np.testing.assert_allclose(v[r], np.linalg.solve(a, u.T @ (c * x[:, r])), atol=1e-10)
    # More iterations fit the observed pairs better than the unobserved ones.
    u, v = fit_ials(USERS, ITEMS, 3, 4, dim=3, reg=0.01, alpha=alpha, iterations=10, progress=False)
    scores = u @ v.T
    assert scores[x == 1].mean() > scores[x == 0].mean()


def test_weighted_ials_and_ease_solve_their_weighted_problems() -> None:
    """A weight per pair (a time decay) sets iALS's confidence to 1 + alpha * weight and
    replaces EASE's ones; weights of 1 change nothing."""
    reg, alpha, dim = 0.3, 4.0, 2
    w = np.array([1.0, 0.5, 0.25, 1.0, 0.1, 1.0, 0.75])
    u, v = fit_ials(
        USERS, ITEMS, 3, 4, dim=dim, reg=reg, alpha=alpha, iterations=1, progress=False, weights=w
    )
    x, cw = np.zeros((3, 4)), np.zeros((3, 4))
    x[USERS, ITEMS], cw[USERS, ITEMS] = 1.0, w
    for r in range(4):
        c = 1.0 + alpha * cw[:, r]
        a = u.T @ (c[:, None] * u) + reg * np.eye(dim)
        np.testing.assert_allclose(v[r], np.linalg.solve(a, u.T @ (c * x[:, r])), atol=1e-10)
    ones = np.ones(len(USERS))
    plain = fit_ials(
        USERS, ITEMS, 3, 4, dim=dim, reg=reg, alpha=alpha, iterations=2, progress=False
    )
    same = fit_ials(
        USERS,
        ITEMS,
        3,
        4,
        dim=dim,
        reg=reg,
        alpha=alpha,
        iterations=2,
        progress=False,
        weights=ones,
    )
    np.testing.assert_allclose(plain[0], same[0])
    np.testing.assert_allclose(plain[1], same[1])
    np.testing.assert_allclose(
        fit_ease(USERS, ITEMS, 3, 4, 0.5, ones), fit_ease(USERS, ITEMS, 3, 4, 0.5)
    )
    b = fit_ease(USERS, ITEMS, 3, 4, 0.5, w)
    for j in range(4):
        others = [k for k in range(4) if k != j]
        a = cw[:, others]
        direct = np.linalg.solve(a.T @ a + 0.5 * np.eye(3), a.T @ cw[:, j])
        np.testing.assert_allclose(b[others, j], direct, atol=1e-10)


def test_platt_recovers_a_known_scaling() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=5000).astype(np.float32)
    labels = (rng.random(5000) < 1 / (1 + np.exp(-(2.0 * logits - 1.0)))).astype(np.float32)
    a, b = fit_platt(logits, labels)
    assert abs(a - 2.0) < 0.25 and abs(b + 1.0) < 0.15


def test_fit_ctr_keeps_the_best_validation_epoch() -> None:
    rng = np.random.default_rng(0)
    # Three fields with their own bucket ranges of one shared table, as hashing gives them.
    cat = (rng.integers(0, 64, (2000, 3)) + np.array([0, 64, 128])).astype(np.int64)
    num = np.zeros((2000, 0), dtype=np.float32)
    label = (cat[:, 0] % 2 == 0).astype(np.float32)
    torch.manual_seed(0)
    model = LogisticRegression(192, 3, 0)
    history = fit_ctr(
        model,
        cat,
        num,
        label,
        FitConfig(epochs=3, lr=0.05, batch_size=256, progress=False),
        valid=(cat[:500], num[:500], label[:500]),
    )
    assert len(history) == 3 and history[-1] < history[0]
    with torch.no_grad():
        logit = model(torch.from_numpy(cat[:500]), torch.from_numpy(num[:500])).numpy()
    assert np.mean((logit > 0) == (label[:500] == 1)) > 0.95


def test_blend_is_one_inner_product_of_both_scores() -> None:
    rng = np.random.default_rng(1)
    a = Fitted(rng.normal(size=(6, 4)), rng.normal(size=(9, 4)), 4, history_columns=4)
    b = Fitted(rng.normal(size=(6, 3)), 5 * rng.normal(size=(9, 3)), 3)
    mixed = blend(a, b, 0.5, np.arange(6))
    scale = np.std(a.user @ a.item.T) / np.std(b.user @ b.item.T)
    expected = a.user @ a.item.T + 0.5 * scale * (b.user @ b.item.T)
    np.testing.assert_allclose(mixed.user @ mixed.item.T, expected, atol=1e-10)
    assert mixed.history_columns == 4 and mixed.latent_dim == 4
