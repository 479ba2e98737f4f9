"""Shared fixtures for the kernel tests: seeded generators and small integer-valued catalogues.

Integer-valued float32 data keep inner products exact (no rounding-order differences between a
kernel and its reference) and produce many equal scores, which exercises tie-breaking.
"""

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


def _int_matrix(
    rng: np.random.Generator, n: int, d: int, low: int = -3, high: int = 4
) -> np.ndarray:
    return rng.integers(low, high, size=(n, d)).astype(np.float32)


@pytest.fixture
def int_matrix():
    """`int_matrix(rng, n, d, low=-3, high=4)`: float32 [n, d] of integers in [low, high)."""
    return _int_matrix


def _clustered(rng: np.random.Generator, n: int, d: int, n_centers: int) -> np.ndarray:
    centers = rng.standard_normal((n_centers, d)).astype(np.float32)
    noise = 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return (centers[rng.integers(0, n_centers, n)] + noise).astype(np.float32)


@pytest.fixture(scope="session")
def clustered_catalogue() -> tuple[np.ndarray, np.ndarray]:
    """(items [20000, 32], queries [50, 32]) drawn around the same 1000 cluster centres."""
    rng = np.random.default_rng(7)
    both = _clustered(rng, 20050, 32, 1000)
    return both[:20000].copy(), both[20000:].copy()
