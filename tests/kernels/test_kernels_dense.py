"""The dense scan (score all, sort once) and the heap scans agree with the reference on the
shapes where the dispatcher picks either one."""

import numpy as np
import pytest

from kernels import exact, exclusions_csr, topk
from kernels.reference import topk_ref


@pytest.fixture(params=["dense", "heap"])
def scan(request, monkeypatch):
    """Force one scan for every few-query search."""
    if request.param == "dense":
        monkeypatch.setattr(exact, "_DENSE_MAX_ITEMS", 1 << 40)
    else:
        monkeypatch.setattr(exact, "_DENSE_MAX_ITEMS", 0)
        monkeypatch.setattr(exact, "_DENSE_ITEMS_PER_K", 0)
    return request.param


def _same(got, want) -> None:
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(
    ("n_items", "n_q", "k"), [(1, 1, 1), (400, 1, 200), (400, 2, 450), (3000, 1, 5)]
)
def test_matches_reference_with_ties_filters_and_padding(scan, rng, int_matrix, n_items, n_q, k):
    items = int_matrix(rng, n_items, 6)
    q = int_matrix(rng, n_q, 6)
    excluded = [rng.choice(n_items, size=min(n_items, 37), replace=False) for _ in range(n_q)]
    exclude = exclusions_csr(excluded)
    allowed = rng.random(n_items) < 0.7
    for kwargs in (
        {},
        {"exclude": exclude},
        {"allowed": allowed},
        {"exclude": exclude, "allowed": allowed},
    ):
        _same(topk(q, items, k, **kwargs), topk_ref(q, items, k, **kwargs))


def test_cosine_and_zero_rows(scan, rng):
    items = rng.standard_normal((300, 8)).astype(np.float32)
    items[::7] = 0.0  # zero rows score 0 under cosine
    q = rng.standard_normal((1, 8)).astype(np.float32)
    ids, scores = topk(q, items, 120, metric="cosine")
    np.testing.assert_allclose(scores, topk_ref(q, items, 120, metric="cosine")[1], atol=1e-6)
    # Each returned id carries its own cosine (float rounding may only swap near-ties).
    norms = np.linalg.norm(items[ids[0]], axis=1) * np.linalg.norm(q)
    exact_cos = np.divide(items[ids[0]] @ q[0], norms, out=np.zeros(120), where=norms > 0)
    np.testing.assert_allclose(scores[0], exact_cos, atol=1e-5)
    assert len(set(ids[0].tolist())) == 120


def test_nan_scores_never_qualify(scan, rng, int_matrix):
    items = int_matrix(rng, 50, 4)
    items[[3, 10, 11]] = np.nan
    q = np.ones((1, 4), dtype=np.float32)
    # As if the NaN rows were excluded: 47 results, then -1 / -inf padding.
    want = topk_ref(q, np.nan_to_num(items), 50, exclude=exclusions_csr([[3, 10, 11]]))
    _same(topk(q, items, 50), want)
    assert np.all(want[0][0][47:] == -1)


def test_dispatch_picks_dense_for_small_catalogues_and_large_k() -> None:
    assert exact.uses_dense_scan(1, 400, 200)
    assert exact.uses_dense_scan(1, 16_000, 1_000)
    # Past the size where the heap scan splits a query across threads, it stays.
    assert not exact.uses_dense_scan(1, 100_000, 10_000)
    assert not exact.uses_dense_scan(1, 100_000, 200)
    assert not exact.uses_dense_scan(exact.BLOCKED_MIN_QUERIES, 400, 200)
