"""MurmurHash3_x86_32 feature hashing: published vectors, the mmh3 package, the frozen key format."""

import mmh3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import MISSING, feature_buckets, hash_strings
from kernels.reference import feature_buckets_ref, murmur3_32_ref

# (input, seed, MurmurHash3_x86_32) from the SMHasher reference implementation.
KNOWN = [
    ("", 0, 0x00000000),
    ("", 1, 0x514E28B7),
    ("", 0xFFFFFFFF, 0x81F16F39),
    ("a", 0, 0x3C2569B2),
    ("abc", 0, 0xB3DD93FA),
    ("abcd", 0, 0x43ED676A),
    ("hello", 0, 0x248BFA47),
    ("The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
]


@pytest.mark.parametrize(("text", "seed", "expected"), KNOWN)
def test_known_vectors(text, seed, expected):
    assert int(hash_strings([text], seed)[0]) == expected
    assert murmur3_32_ref(text.encode(), seed) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=20), st.integers(0, 2**32 - 1))
def test_matches_mmh3(values, seed):
    got = hash_strings(values, seed)
    assert got.dtype == np.uint32 and got.shape == (len(values),)
    assert got.tolist() == [mmh3.hash(v, seed, signed=False) for v in values]


def test_numpy_string_array_and_every_tail_length():
    values = np.array(["x" * n for n in range(13)] + ["héllo ✓ 日本"])
    assert hash_strings(values, 7).tolist() == [mmh3.hash(v, 7, signed=False) for v in values]


def test_empty_input():
    assert hash_strings([]).shape == (0,)
    assert feature_buckets("f", [], 10).shape == (0,)


def test_feature_key_format():
    n = 1 << 20
    got = feature_buckets("country", ["FR", None, 3, float("nan"), "日本"], n, seed=5)
    keys = ["country=FR", f"country={MISSING}", "country=3", f"country={MISSING}", "country=日本"]
    assert got.dtype == np.int64
    assert got.tolist() == [mmh3.hash(key, 5, signed=False) % n for key in keys]


# feature_buckets("item_category", ["shoes", "books", None, "", 42], 1000), pinned on 2026-11-25.
PINNED = [322, 918, 86, 243, 179]


def test_feature_buckets_are_frozen():
    # Pinned outputs: if this changes, every trained model's embedding rows move. Never update.
    got = feature_buckets("item_category", ["shoes", "books", None, "", 42], 1000)
    assert (
        got.tolist()
        == feature_buckets_ref("item_category", ["shoes", "books", None, "", 42], 1000).tolist()
    )
    assert got.tolist() == PINNED


@settings(max_examples=100, deadline=None)
@given(
    st.text(min_size=1, max_size=10),
    st.lists(st.one_of(st.none(), st.text(max_size=12), st.integers(-(10**6), 10**6)), max_size=15),
    st.integers(1, 2**31),
)
def test_feature_buckets_match_reference(field, values, n_buckets):
    got = feature_buckets(field, values, n_buckets)
    assert got.tolist() == feature_buckets_ref(field, values, n_buckets).tolist()
    assert np.all((got >= 0) & (got < n_buckets))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        feature_buckets("f", ["a"], 0)
    with pytest.raises(ValueError):
        hash_strings(["a"], seed=-1)
