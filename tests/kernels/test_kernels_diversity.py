"""MMR and per-category caps against their Python references, plus their defining behaviours."""

import numpy as np
import pytest

from kernels import topk
from kernels.diversity import cap_per_category, mmr
from kernels.reference import cap_per_category_ref, mmr_ref


@pytest.fixture
def shortlist(rng):
    items = rng.standard_normal((400, 16)).astype(np.float32)
    ids, scores = topk(rng.standard_normal((5, 16)).astype(np.float32), items, 40)
    ids[2, 30:] = -1  # a query with fewer candidates than asked for
    scores[2, 30:] = -np.inf
    return items, ids, scores


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7, 1.0])
def test_mmr_matches_reference(shortlist, lam):
    items, ids, scores = shortlist
    got = mmr(ids, scores, items, 10, lam)
    want = mmr_ref(ids, scores, items, 10, lam)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_mmr_lambda_one_keeps_order_and_pads(shortlist):
    items, ids, scores = shortlist
    got_ids, got_scores = mmr(ids, scores, items, 35, 1.0)
    np.testing.assert_array_equal(got_ids[[0, 1, 3, 4]], ids[[0, 1, 3, 4], :35])
    assert got_ids[2, :30].tolist() == ids[2, :30].tolist()
    assert np.all(got_ids[2, 30:] == -1) and np.all(got_scores[2, 30:] == -np.inf)


def test_mmr_skips_near_duplicates():
    items = np.array([[1, 0], [1, 0.01], [0, 1]], dtype=np.float32)
    ids = np.array([[0, 1, 2]])
    scores = np.array([[1.0, 0.99, 0.8]], dtype=np.float32)
    assert mmr(ids, scores, items, 2, 0.5)[0].tolist() == [[0, 2]]
    assert mmr(ids, scores, items, 2, 1.0)[0].tolist() == [[0, 1]]


def test_cap_matches_reference(shortlist, rng):
    items, ids, scores = shortlist
    categories = rng.integers(-1, 6, size=len(items))
    for cap in (1, 2, 5):
        got = cap_per_category(ids, scores, categories, cap, 12)
        want = cap_per_category_ref(ids, scores, categories, cap, 12)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_cap_limits_each_category():
    ids = np.array([[5, 4, 3, 2, 1, 0]])
    scores = -np.arange(6, dtype=np.float32)[None]
    categories = np.array([-1, 9, 7, 7, 7, 7])  # item 0 uncategorised
    got_ids, got_scores = cap_per_category(ids, scores, categories, 2, 5)
    assert got_ids.tolist() == [[5, 4, 1, 0, -1]]
    assert got_scores[0, :4].tolist() == [0.0, -1.0, -4.0, -5.0]


def test_bad_arguments(shortlist):
    items, ids, scores = shortlist
    with pytest.raises(ValueError):
        mmr(ids, scores, items, 5, 1.5)
    with pytest.raises(ValueError):
        cap_per_category(ids, scores, np.zeros(400, dtype=np.int64), 0, 5)
    with pytest.raises(IndexError):
        cap_per_category(ids, scores, np.zeros(10, dtype=np.int64), 1, 5)
    with pytest.raises(ValueError):
        mmr(ids, scores[:, :5], items, 5)
