"""IVF: index structure, exactness at full probe, recall at partial probe, codes, filters, files."""

import numpy as np
import pytest

from kernels import exclusions_csr, topk
from kernels.ivf import build_ivf, ivf_topk, load_ivf, quantize_ivf, save_ivf
from kernels.kmeans import kmeans

# Documented recall@10 levels on the clustered test catalogue (64 lists, nprobe 8), with margin
# below the measured 0.894 (ip) and 0.962 (cosine).
RECALL_AT_8_PROBES = {"ip": 0.85, "cosine": 0.93}


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want, strict=True)]))


def test_index_structure(clustered_catalogue):
    items, _ = clustered_catalogue
    index = build_ivf(items, 64, seed=3)
    assert index.centroids.shape == (64, 32) and index.centroids.dtype == np.float32
    assert index.offsets[0] == 0 and index.offsets[-1] == len(items)
    assert np.all(np.diff(index.offsets) >= 0)
    assert np.array_equal(np.sort(index.ids), np.arange(len(items)))
    for lst in range(64):
        members = index.ids[index.offsets[lst] : index.offsets[lst + 1]]
        assert np.all(np.diff(members) > 0)
    again = build_ivf(items, 64, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(index, again, strict=True))


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_full_probe_is_exact(rng, int_matrix, metric):
    items = int_matrix(rng, 3000, 8)
    q = int_matrix(rng, 6, 8)
    index = build_ivf(items, 16, seed=1, metric=metric)
    ids, scores = ivf_topk(q, items, index, 20, nprobe=16, metric=metric)
    want_ids, want_scores = topk(q, items, 20, metric=metric)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    if metric == "ip":  # integer data: exact sums, so identical tie order too
        np.testing.assert_array_equal(ids, want_ids)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_recall_above_documented_level(clustered_catalogue, metric):
    items, queries = clustered_catalogue
    index = build_ivf(items, 64, seed=0, metric=metric)
    want, _ = topk(queries, items, 10, metric=metric)
    got, _ = ivf_topk(queries, items, index, 10, nprobe=8, metric=metric)
    assert recall(got, want) >= RECALL_AT_8_PROBES[metric]
    low, _ = ivf_topk(queries, items, index, 10, nprobe=1, metric=metric)
    assert recall(low, want) < recall(got, want)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_ordered_float32_copy_matches_gather_path(clustered_catalogue, metric):
    items, queries = clustered_catalogue
    index = build_ivf(items, 32, seed=0, metric=metric)
    ordered = quantize_ivf(items, index, "float32")
    assert ordered.codes.dtype == np.float32
    a = ivf_topk(queries, items, index, 10, nprobe=6, metric=metric)
    b = ivf_topk(queries, items, ordered, 10, nprobe=6, metric=metric)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("dtype", ["int8", "float16"])
@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_codes_rescore_exactly(clustered_catalogue, dtype, metric):
    items, queries = clustered_catalogue
    index = quantize_ivf(items, build_ivf(items, 32, seed=0, metric=metric), dtype)
    assert index.codes.dtype == np.dtype(dtype) and index.codes.shape == items.shape
    want, _ = topk(queries, items, 10, metric=metric)
    ids, scores = ivf_topk(queries, items, index, 10, nprobe=32, metric=metric, rescore=8)
    assert recall(ids, want) >= 0.99
    # Returned scores are the exact float32 scores of the returned ids.
    exact = topk(queries, items, len(items), metric=metric)
    for r in range(len(queries)):
        lookup = dict(zip(exact[0][r].tolist(), exact[1][r].tolist(), strict=True))
        np.testing.assert_allclose(scores[r], [lookup[i] for i in ids[r]], rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(scores[r]) <= 0)


def test_float16_storage_handles_zeros_and_small_values(rng):
    items = rng.standard_normal((500, 8)).astype(np.float32)
    items[:50] = 0.0
    items[50:100] *= 1e-6  # float16 subnormals
    index = quantize_ivf(items, build_ivf(items, 4, seed=0), "float16")
    q = rng.standard_normal((3, 8)).astype(np.float32)
    ids, scores = ivf_topk(q, items, index, 500, nprobe=4, rescore=1)
    want_ids, want_scores = topk(q, items, 500)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.sort(ids, axis=1), np.sort(want_ids, axis=1))


def test_filters_inside_the_scan(clustered_catalogue):
    items, queries = clustered_catalogue
    q = queries[:4]
    index = build_ivf(items, 32, seed=0)
    full, _ = topk(q, items, 200)
    exclude = exclusions_csr([row[:150] for row in full])
    allowed = np.random.default_rng(0).random(len(items)) < 0.5
    ids, _ = ivf_topk(q, items, index, 20, nprobe=32, exclude=exclude, allowed=allowed)
    want, _ = topk(q, items, 20, exclude=exclude, allowed=allowed)
    np.testing.assert_array_equal(ids, want)
    for r in range(4):
        assert not set(ids[r]) & set(full[r, :150]) and allowed[ids[r]].all()


def test_edge_shapes(rng, int_matrix):
    items = int_matrix(rng, 30, 4)
    index = build_ivf(items, 4, seed=0)
    ids, scores = ivf_topk(items[0], items, index, 50, nprobe=4)
    assert ids.shape == (1, 50) and np.all(ids[0, 30:] == -1) and np.all(scores[0, 30:] == -np.inf)
    assert ivf_topk(items[:0], items, index, 5, nprobe=2)[0].shape == (0, 5)
    with pytest.raises(ValueError, match="different item matrix"):
        ivf_topk(items[0], items[:20], index, 5, nprobe=2)


def test_save_load_round_trip(tmp_path, clustered_catalogue):
    items, queries = clustered_catalogue
    index = quantize_ivf(items, build_ivf(items, 16, seed=0), "int8")
    save_ivf(tmp_path / "ivf", index)
    loaded = load_ivf(tmp_path / "ivf")
    for a, b in zip(index, loaded, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    mapped = load_ivf(tmp_path / "ivf", mmap_mode="r")
    np.testing.assert_array_equal(
        ivf_topk(queries, items, mapped, 5, nprobe=4)[0],
        ivf_topk(queries, items, index, 5, nprobe=4)[0],
    )


def test_kmeans_recovers_separated_clusters(rng):
    centers = 20 * rng.standard_normal((5, 6)).astype(np.float32)
    x = (centers[rng.integers(0, 5, 2000)] + rng.standard_normal((2000, 6))).astype(np.float32)
    found = kmeans(x, 5, seed=0)
    dist = np.linalg.norm(centers[:, None] - found[None], axis=2)
    assert np.all(dist.min(axis=1) < 0.5)
    with pytest.raises(ValueError):
        kmeans(x[:3], 5)


def test_odd_dimension_without_codes_matches_exact() -> None:
    # MF embeddings carry the item bias as an extra column: d is often odd (e.g. 33).
    from kernels import build_ivf, ivf_topk, topk

    rng = np.random.default_rng(3)
    items = rng.standard_normal((2000, 33)).astype(np.float32)
    index = build_ivf(items, 8, seed=0)
    q = rng.standard_normal((2, 33)).astype(np.float32)
    got_ids, _ = ivf_topk(q, items, index, 10, nprobe=8)
    want_ids, _ = topk(q, items, 10)
    np.testing.assert_array_equal(got_ids, want_ids)
