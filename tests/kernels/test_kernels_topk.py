"""kernels.topk against the NumPy reference: shapes, filters, ties, padding and edge cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import exclusions_csr, topk
from kernels.reference import topk_ref


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def assert_close_ranking(got, want, q, items, metric):
    """For float data: same score profile, and every returned id really has its returned score."""
    ids, scores = got
    np.testing.assert_allclose(scores, want[1], rtol=1e-5, atol=1e-5)
    full = topk_ref(q, items, items.shape[0], metric=metric)
    for r in range(ids.shape[0]):
        valid = ids[r] >= 0
        exact = dict(zip(full[0][r].tolist(), full[1][r].tolist(), strict=True))
        np.testing.assert_allclose(
            scores[r, valid], [exact[i] for i in ids[r, valid]], rtol=1e-5, atol=1e-5
        )
        assert len(set(ids[r, valid].tolist())) == valid.sum()


@pytest.mark.parametrize(
    ("n_items", "d", "n_q", "k"),
    [
        (1, 1, 1, 1),
        (10, 3, 4, 3),
        (257, 16, 7, 10),
        (1000, 8, 3, 50),
        (40000, 4, 1, 25),
        (40000, 5, 3, 7),
    ],
)
def test_ip_matches_reference_exactly(rng, n_items, d, n_q, k, int_matrix):
    items = int_matrix(rng, n_items, d)
    q = int_matrix(rng, n_q, d)
    assert_same(topk(q, items, k), topk_ref(q, items, k))


@pytest.mark.parametrize(("n_items", "n_q", "k"), [(500, 5, 20), (40000, 1, 100), (40000, 4, 10)])
def test_cosine_matches_reference(rng, n_items, n_q, k):
    items = rng.standard_normal((n_items, 16)).astype(np.float32)
    q = rng.standard_normal((n_q, 16)).astype(np.float32)
    got = topk(q, items, k, metric="cosine")
    assert_close_ranking(got, topk_ref(q, items, k, metric="cosine"), q, items, "cosine")


def test_float_ip_matches_reference(rng):
    items = rng.standard_normal((3000, 64)).astype(np.float32)
    q = rng.standard_normal((6, 64)).astype(np.float32)
    got = topk(q, items, 40)
    assert_close_ranking(got, topk_ref(q, items, 40), q, items, "ip")


@pytest.mark.parametrize("n_q", [1, 3, 5, 66])
def test_filters_match_reference(rng, n_q, int_matrix):
    items = int_matrix(rng, 40000, 4)
    q = int_matrix(rng, n_q, 4)
    exclude = exclusions_csr([rng.choice(40000, size=1000, replace=False) for _ in range(n_q)])
    allowed = rng.random(40000) < 0.3
    for kwargs in (
        {"exclude": exclude},
        {"allowed": allowed},
        {"exclude": exclude, "allowed": allowed},
    ):
        assert_same(topk(q, items, 30, **kwargs), topk_ref(q, items, 30, **kwargs))


def test_excluding_the_best_items_still_returns_k(rng):
    items = rng.standard_normal((2000, 8)).astype(np.float32)
    q = rng.standard_normal(8).astype(np.float32)
    best = topk(q, items, 500)[0][0]
    ids, scores = topk(q, items, 10, exclude=exclusions_csr([best]))
    np.testing.assert_array_equal(ids[0], topk(q, items, 510)[0][0, 500:])
    assert np.all(np.isfinite(scores))


def test_k_larger_than_catalogue_pads(rng, int_matrix):
    items = int_matrix(rng, 5, 3)
    ids, scores = topk(int_matrix(rng, 2, 3), items, 8)
    assert ids.shape == scores.shape == (2, 8)
    assert np.all(np.sort(ids[:, :5], axis=1) == np.arange(5))
    assert np.all(ids[:, 5:] == -1) and np.all(scores[:, 5:] == -np.inf)


def test_all_items_excluded_or_masked(rng, int_matrix):
    items = int_matrix(rng, 30, 4)
    q = int_matrix(rng, 2, 4)
    for kwargs in (
        {"exclude": exclusions_csr([np.arange(30), np.arange(30)[::-1]])},
        {"allowed": np.zeros(30, dtype=np.uint8)},
    ):
        ids, scores = topk(q, items, 4, **kwargs)
        assert np.all(ids == -1) and np.all(scores == -np.inf)


def test_partial_qualifiers_pad_after_the_real_ones(rng, int_matrix):
    items = int_matrix(rng, 100, 4)
    allowed = np.zeros(100, dtype=bool)
    allowed[[7, 42, 99]] = True
    ids, _ = topk(int_matrix(rng, 1, 4), items, 5, allowed=allowed)
    assert sorted(ids[0, :3].tolist()) == [7, 42, 99]
    assert ids[0, 3:].tolist() == [-1, -1]


@pytest.mark.parametrize("n_items", [50, 50000])
@pytest.mark.parametrize("n_q", [1, 8])
def test_ties_break_by_lower_id(n_items, n_q):
    items = np.ones((n_items, 4), dtype=np.float32)
    items[n_items // 2] = 2.0  # one strict winner in the middle, then equal scores
    ids, scores = topk(np.ones((n_q, 4), dtype=np.float32), items, 6)
    assert np.all(ids == [n_items // 2, 0, 1, 2, 3, 4])
    assert np.all(scores == [8.0, 4.0, 4.0, 4.0, 4.0, 4.0])


def test_empty_batch_and_zero_k(rng, int_matrix):
    items = int_matrix(rng, 10, 3)
    ids, scores = topk(np.empty((0, 3), dtype=np.float32), items, 4)
    assert ids.shape == scores.shape == (0, 4)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert topk(int_matrix(rng, 2, 3), items, 0)[0].shape == (2, 0)
    ids, _ = topk(int_matrix(rng, 2, 3), np.empty((0, 3), dtype=np.float32), 3)
    assert np.all(ids == -1)


def test_one_d_query_is_one_row(rng, int_matrix):
    items = int_matrix(rng, 100, 6)
    q = int_matrix(rng, 1, 6)
    got = topk(q[0], items, 7)
    assert got[0].shape == (1, 7)
    assert_same(got, topk(q, items, 7))


def test_cosine_zero_vectors(rng):
    items = rng.standard_normal((20, 4)).astype(np.float32)
    items[[3, 11]] = 0.0
    ids, scores = topk(np.zeros(4, dtype=np.float32), items, 5, metric="cosine")
    assert ids[0].tolist() == [0, 1, 2, 3, 4] and np.all(scores == 0.0)
    q = rng.standard_normal(4).astype(np.float32)
    ids, scores = topk(q, items, 20, metric="cosine")
    zero_rank = {int(i): s for i, s in zip(ids[0], scores[0], strict=True)}
    assert zero_rank[3] == 0.0 and zero_rank[11] == 0.0
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)


def test_read_only_memmap_items(rng, tmp_path, int_matrix):
    items = int_matrix(rng, 300, 8)
    np.save(tmp_path / "items.npy", items)
    mm = np.load(tmp_path / "items.npy", mmap_mode="r")
    q = int_matrix(rng, 3, 8)
    assert_same(topk(q, mm, 9, metric="cosine"), topk(q, items, 9, metric="cosine"))
    assert_same(topk(q, mm, 9), topk_ref(q, items, 9))


def test_rejects_bad_inputs(rng, int_matrix):
    items = int_matrix(rng, 10, 3)
    q = int_matrix(rng, 2, 3)
    with pytest.raises(TypeError):
        topk(q, items.astype(np.float64), 3)
    with pytest.raises(TypeError):
        topk(q, np.asfortranarray(items), 3)
    with pytest.raises(ValueError, match="metric"):
        topk(q, items, 3, metric="l2")
    with pytest.raises(ValueError, match="queries"):
        topk(int_matrix(rng, 2, 4), items, 3)
    with pytest.raises(ValueError, match="indptr"):
        topk(q, items, 3, exclude=exclusions_csr([[1]]))
    with pytest.raises(ValueError, match="allowed"):
        topk(q, items, 3, allowed=np.ones(9, dtype=bool))


def test_exclusions_csr_layout():
    indptr, indices = exclusions_csr([[3, 1], [], np.array([7])])
    assert indptr.tolist() == [0, 2, 2, 3] and indices.tolist() == [3, 1, 7]
    assert indptr.dtype == indices.dtype == np.int64
    indptr, indices = exclusions_csr([[], []])
    assert indptr.tolist() == [0, 0, 0] and indices.size == 0


@settings(max_examples=60, deadline=None)
@given(
    n_items=st.integers(1, 60),
    n_q=st.integers(1, 6),
    k=st.integers(1, 70),
    metric=st.sampled_from(["ip", "cosine"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(n_items, n_q, k, metric, seed):
    rng = np.random.default_rng(seed)
    # Values in {-1, 0, 1}: exact arithmetic in both metrics' numerators and lots of ties.
    items = rng.integers(-1, 2, size=(n_items, 3)).astype(np.float32)
    q = rng.integers(-1, 2, size=(n_q, 3)).astype(np.float32)
    exclude = exclusions_csr(
        [rng.choice(n_items, size=rng.integers(0, n_items + 1)) for _ in range(n_q)]
    )
    allowed = rng.random(n_items) < 0.8
    got = topk(q, items, k, metric=metric, exclude=exclude, allowed=allowed)
    want = topk_ref(q, items, k, metric=metric, exclude=exclude, allowed=allowed)
    if metric == "ip":
        assert_same(got, want)
    else:
        assert_close_ranking(got, want, q, items, metric)
