"""gather_rows against the NumPy reference, padding ids, `out=` reuse and bad ids."""

import numpy as np
import pytest

from kernels import gather_rows
from kernels.reference import gather_rows_ref


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_matches_reference(rng, dtype):
    table = rng.integers(-100, 100, size=(500, 7)).astype(dtype)
    ids = rng.integers(-1, 500, size=2000)
    got = gather_rows(table, ids)
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, gather_rows_ref(table, ids))


def test_padding_ids_give_zero_rows(rng):
    table = rng.standard_normal((10, 3)).astype(np.float32) + 5
    got = gather_rows(table, np.array([-1, 2, -1]))
    assert np.all(got[[0, 2]] == 0) and np.array_equal(got[1], table[2])


def test_out_is_filled_and_returned(rng):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    out = np.full((3, 4), 9.0, dtype=np.float32)
    assert gather_rows(table, np.array([1, 1, -1]), out=out) is out
    np.testing.assert_array_equal(out, gather_rows_ref(table, np.array([1, 1, -1])))
    with pytest.raises(ValueError):
        gather_rows(table, np.array([1]), out=out)


def test_read_only_table_and_empty_ids(rng, tmp_path):
    table = rng.standard_normal((20, 4)).astype(np.float32)
    np.save(tmp_path / "t.npy", table)
    mm = np.load(tmp_path / "t.npy", mmap_mode="r")
    np.testing.assert_array_equal(gather_rows(mm, np.array([19, 0])), table[[19, 0]])
    assert gather_rows(table, np.empty(0, dtype=np.int64)).shape == (0, 4)


def test_out_of_range_ids_raise(rng):
    table = rng.standard_normal((5, 2)).astype(np.float32)
    for bad in ([5], [-2]):
        with pytest.raises(IndexError):
            gather_rows(table, np.array(bad))
