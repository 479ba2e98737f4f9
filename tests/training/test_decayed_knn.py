"""Item-kNN with time-decayed co-occurrences: a weight per pair replaces X's ones."""

from __future__ import annotations

import numpy as np

from training.fit import fit_item_knn

# Three users, four items: u0 {0, 1}, u1 {1, 2}, u2 {0, 1, 3}.
USERS = np.array([0, 0, 1, 1, 2, 2, 2])
ITEMS = np.array([0, 1, 1, 2, 0, 1, 3])


def test_weights_of_one_change_nothing_and_zero_weights_drop_pairs() -> None:
    plain = fit_item_knn(USERS, ITEMS, 3, 4, neighbours=0)
    ones = fit_item_knn(USERS, ITEMS, 3, 4, neighbours=0, weights=np.ones(len(USERS)))
    np.testing.assert_allclose(ones, plain)
    # Weights of 0 for u2's pairs (fully decayed): the cosine of u0 and u1's pairs alone.
    keep = USERS != 2
    w = keep.astype(np.float64)
    decayed = fit_item_knn(USERS, ITEMS, 3, 4, neighbours=0, weights=w)
    subset = fit_item_knn(USERS[keep], ITEMS[keep], 3, 4, neighbours=0)
    np.testing.assert_allclose(decayed, subset)
    # Items 0 and 1 now co-occur only in u0: |0| = 1, |1| = 2 users -> 1 / sqrt(2).
    assert np.isclose(decayed[0, 1], 1 / np.sqrt(2))


def test_a_weight_scales_its_pair_inside_the_cosine() -> None:
    w = np.array([1.0, 0.5, 0.25, 1.0, 0.1, 1.0, 0.75])
    sim = fit_item_knn(USERS, ITEMS, 3, 4, neighbours=0, weights=w)
    x = np.zeros((3, 4))
    x[USERS, ITEMS] = w
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    expected = co / np.outer(norms, norms)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(sim, expected)
    # Item 0 with item 1: u0 (1 x 0.5) + u2 (0.1 x 1).
    assert np.isclose(sim[0, 1], 0.6 / (np.hypot(1.0, 0.1) * np.sqrt(0.25 + 0.0625 + 1.0)))
