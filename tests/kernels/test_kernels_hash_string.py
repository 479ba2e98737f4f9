"""`hash_string`, the per-request scalar hash, equals the batch kernel and the reference."""

from __future__ import annotations

import mmh3
import pytest

from kernels import hash_string, hash_strings


@pytest.mark.parametrize("value", ["", "a", "abcd", "exp:user-123", "é漢字🙂", "x" * 1001])
@pytest.mark.parametrize("seed", [0, 1, 0xFFFFFFFF])
def test_hash_string_matches_hash_strings_and_mmh3(value: str, seed: int) -> None:
    expected = mmh3.hash(value, seed, signed=False)
    assert hash_string(value, seed) == expected == int(hash_strings([value], seed)[0])


def test_hash_string_refuses_a_seed_out_of_range() -> None:
    with pytest.raises(ValueError, match="unsigned 32-bit"):
        hash_string("a", -1)
