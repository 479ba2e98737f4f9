"""KServe v2 BYTES tensors: raw contents are each element as a 4-byte little-endian length and
its bytes, typed contents are `bytes_contents`. ONNX string tensors take Python ``str``
(onnxruntime silently misreads ``bytes`` objects), so elements are decoded as UTF-8 on the way
in and encoded on the way out."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import numpy as np

from engine.errors import InvalidArgument

_LENGTH = struct.Struct("<I")


def _strings(elements: Iterable[bytes], count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    try:
        for i, element in enumerate(elements):
            out[i] = element.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"{where}: BYTES element {i} is not UTF-8 text (ONNX string tensors hold text): {exc}"
        ) from None
    return out


def bytes_from_raw(data: bytes, shape: Sequence[int], where: str) -> np.ndarray:
    """An object array of ``str`` from length-prefixed raw contents holding prod(shape)
    elements, no more and no less."""
    count = math.prod(shape)
    view = memoryview(data)
    elements = []
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidArgument(
                f"{where}: raw BYTES contents end after {i} of {count} elements "
                f"(shape {list(shape)}); each element is a 4-byte little-endian length and bytes"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidArgument(
                f"{where}: BYTES element {i} claims {length} bytes, only "
                f"{len(view) - offset} remain in its raw contents"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise InvalidArgument(
            f"{where}: raw BYTES contents hold {len(view) - offset} bytes after the {count} "
            f"elements of shape {list(shape)}"
        )
    return _strings(elements, count, where).reshape(tuple(shape))


def bytes_from_contents(values: Sequence[bytes], shape: Sequence[int], where: str) -> np.ndarray:
    """An object array of ``str`` from `bytes_contents`."""
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"{where}: shape {list(shape)} needs {count} values in bytes_contents, "
            f"got {len(values)}"
        )
    return _strings(values, count, where).reshape(tuple(shape))


def _element(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


def bytes_elements(array: np.ndarray) -> list[bytes]:
    """The elements of a string (or bytes) array as UTF-8 bytes, in C order."""
    return [_element(value) for value in array.ravel()]


def bytes_to_raw(array: np.ndarray) -> bytes:
    """Length-prefixed raw contents of a string (or bytes) array."""
    parts = []
    for data in bytes_elements(array):
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def is_bytes_array(array: np.ndarray) -> bool:
    """Whether ``array`` holds strings or bytes (object, ``U`` or ``S`` dtype)."""
    return array.dtype.kind in "OUS"
