"""Stable feature hashing (MurmurHash3_x86_32) shared bit-for-bit by training and serving.

Never change the algorithm, the key format or the seed handling here: every trained model's
embedding rows are addressed by these hashes.
"""

from collections.abc import Sequence

import numpy as np
from numba import njit, prange

from kernels.threads import apply_budget

MISSING = "__missing__"
# Bytes hashed from which the thread pool pays off (~0.1 ms of single-thread work).
_PARALLEL_FROM = 1 << 16

_M32 = np.uint64(0xFFFFFFFF)
_C1 = np.uint64(0xCC9E2D51)
_C2 = np.uint64(0x1B873593)
_N = np.uint64(0xE6546B64)
_F1 = np.uint64(0x85EBCA6B)
_F2 = np.uint64(0xC2B2AE35)


# 32-bit arithmetic is done in uint64 and masked: every constant is a uint64 so Numba never
# mixes signed and unsigned integers (which it would promote to float64).
@njit(cache=True, inline="always")
def _rotl32(x, r):
    return ((x << np.uint64(r)) | (x >> np.uint64(32 - r))) & _M32


@njit(cache=True, inline="always")
def _mix_k(k):
    k = (k * _C1) & _M32
    k = _rotl32(k, 15)
    return (k * _C2) & _M32


@njit(cache=True)
def murmur3_32(buf, lo, hi, seed):
    """MurmurHash3_x86_32 of buf[lo:hi] (uint8) with a uint32 seed, as uint64."""
    h = np.uint64(seed) & _M32
    n = hi - lo
    end = lo + (n // 4) * 4
    for p in range(lo, end, 4):
        k = (
            np.uint64(buf[p])
            | (np.uint64(buf[p + 1]) << np.uint64(8))
            | (np.uint64(buf[p + 2]) << np.uint64(16))
            | (np.uint64(buf[p + 3]) << np.uint64(24))
        )
        h ^= _mix_k(k)
        h = _rotl32(h, 13)
        h = (h * np.uint64(5) + _N) & _M32
    tail = n & 3
    if tail > 0:
        k = np.uint64(0)
        for t in range(tail):
            k |= np.uint64(buf[end + t]) << np.uint64(8 * t)
        h ^= _mix_k(k)
    h ^= np.uint64(n) & _M32
    h ^= h >> np.uint64(16)
    h = (h * _F1) & _M32
    h ^= h >> np.uint64(13)
    h = (h * _F2) & _M32
    h ^= h >> np.uint64(16)
    return h


@njit(cache=True, parallel=True)
def _hash_many(buf, offsets, seed, out):
    for i in prange(offsets.shape[0] - 1):
        out[i] = np.uint32(murmur3_32(buf, offsets[i], offsets[i + 1], seed))


@njit(cache=True, parallel=True)
def _prefixed(buf, offsets, prefix):
    """The buffer and offsets of prefix + each string, built in one parallel pass."""
    n = offsets.shape[0] - 1
    n_p = prefix.shape[0]
    new_offsets = offsets + n_p * np.arange(n + 1)
    out = np.empty(new_offsets[n], dtype=np.uint8)
    for i in prange(n):
        dst = new_offsets[i]
        for t in range(n_p):
            out[dst + t] = prefix[t]
        src = offsets[i]
        for t in range(offsets[i + 1] - src):
            out[dst + n_p + t] = buf[src + t]
    return out, new_offsets


def _encode(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 encode into one byte buffer plus int64 offsets; the loops run in C (map, join)."""
    encoded = list(map(str.encode, strings))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return buf, offsets


def _as_str_list(values: Sequence[object] | np.ndarray) -> list:
    if isinstance(values, np.ndarray):
        return values.ravel().tolist()
    return values if isinstance(values, list) else list(values)


def _check_seed(seed: int) -> int:
    if not 0 <= seed <= 0xFFFFFFFF:
        raise ValueError("seed must fit in an unsigned 32-bit integer")
    return seed


def hash_strings(values: Sequence[str] | np.ndarray, seed: int = 0) -> np.ndarray:
    """MurmurHash3_x86_32 of each string's UTF-8 bytes, as uint32.

    Bit-identical to the reference C++ `MurmurHash3_x86_32` and to `mmh3.hash(s, seed,
    signed=False)`. `seed` is an unsigned 32-bit integer.
    """
    buf, offsets = _encode(_as_str_list(values))
    out = np.empty(offsets.shape[0] - 1, dtype=np.uint32)
    apply_budget(buf.shape[0], _PARALLEL_FROM)
    _hash_many(buf, offsets, _check_seed(seed), out)
    return out


def hash_string(value: str, seed: int = 0) -> int:
    """MurmurHash3_x86_32 of one string, as an unsigned int: ``hash_strings([value])[0]``
    without the parallel dispatch, which costs ~300 µs per call (per-request use)."""
    buf = np.frombuffer(value.encode(), dtype=np.uint8)
    return int(murmur3_32(buf, 0, buf.shape[0], _check_seed(seed)))


def _value_strings(values: list) -> list[str]:
    """Values as the strings that are hashed: str(v), with None and float NaN as MISSING."""
    if all(type(v) is str for v in values):
        return values
    return [MISSING if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]


def feature_buckets(
    field: str, values: Sequence[object] | np.ndarray, n_buckets: int, seed: int = 0
) -> np.ndarray:
    """Hash bucket of each categorical value of one feature field, as int64 in [0, n_buckets).

    The hashed key is the UTF-8 encoding of `f"{field}={value}"`, with `value` formatted by
    Python's `str()` and None (or a float NaN, i.e. a null) replaced by the literal
    `"__missing__"`; the bucket is `MurmurHash3_x86_32(key, seed) % n_buckets` with the hash
    read as an unsigned 32-bit integer. Example: field "country", value "FR" hashes the bytes
    `b"country=FR"`. Training and serving both call this function, so this format is frozen:
    pass the same Python types on both sides (str(1) is "1" but str(1.0) is "1.0").
    """
    if n_buckets <= 0:
        raise ValueError("n_buckets must be positive")
    strings = _value_strings(_as_str_list(values))
    buf, offsets = _encode(strings)
    prefix = np.frombuffer(f"{field}=".encode(), dtype=np.uint8)
    apply_budget(buf.shape[0] + prefix.shape[0] * len(strings), _PARALLEL_FROM)
    buf, offsets = _prefixed(buf, offsets, prefix)
    hashes = np.empty(offsets.shape[0] - 1, dtype=np.uint32)
    _hash_many(buf, offsets, _check_seed(seed), hashes)
    return (hashes % np.uint32(n_buckets)).astype(np.int64)
