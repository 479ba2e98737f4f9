"""Wire tensors: exact round trips for every supported dtype and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reachrank.v1 import ranking_pb2

from clients.tensors import WIRE_DTYPES, from_tensor, to_tensor


@given(
    hnp.arrays(
        dtype=st.sampled_from(list(WIRE_DTYPES)),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    )
)
def test_round_trip_is_exact(array: np.ndarray) -> None:
    decoded = from_tensor(to_tensor(array))
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_wire_format_is_little_endian_c_order() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3).T  # big-endian and not C-contiguous
    tensor = to_tensor(array)
    assert tensor.dtype == "int32"
    assert list(tensor.shape) == [3, 2]
    assert tensor.data == np.array([[0, 3], [1, 4], [2, 5]], dtype="<i4").tobytes()


def test_decoded_array_shares_the_message_bytes() -> None:
    decoded = from_tensor(to_tensor(np.ones((2, 2), np.float32)))
    assert not decoded.flags.writeable


@pytest.mark.parametrize("dtype", ["float16", "bool", "uint8", "complex64", "object"])
def test_unsupported_dtype_is_refused(dtype: str) -> None:
    with pytest.raises(ValueError, match="unsupported tensor dtype"):
        to_tensor(np.zeros(3, dtype=dtype))


def test_python_lists_take_numpy_default_dtypes() -> None:
    assert to_tensor([1, 2, 3]).dtype == "int64"
    assert to_tensor([[1.5], [2.5]]).dtype == "float64"


@pytest.mark.parametrize(
    ("shape", "size"),
    [((2, 3), 23), ((2, 3), 25), ((4,), 0), ((), 8)],
)
def test_byte_length_must_match_shape(shape: tuple[int, ...], size: int) -> None:
    tensor = ranking_pb2.Tensor(dtype="float32", shape=shape, data=b"\0" * size)
    with pytest.raises(ValueError, match=r"needs \d+ bytes, got"):
        from_tensor(tensor)


def test_unknown_wire_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="'bfloat16'"):
        from_tensor(ranking_pb2.Tensor(dtype="bfloat16", shape=[1], data=b"\0\0"))


def test_negative_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        from_tensor(ranking_pb2.Tensor(dtype="int64", shape=[-1, 2], data=b""))
