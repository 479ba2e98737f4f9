"""warmup() leaves every serving-path kernel compiled, so no request ever waits for Numba."""

import numpy as np

import kernels
from kernels import exact, gather, hashing


def test_warmup_compiles_serving_kernels():
    elapsed = kernels.warmup()
    assert elapsed > 0
    # Writable and read-only (memmap) item matrices: two specialisations of the scan.
    assert len(exact._topk_scan.signatures) >= 2
    assert hashing._hash_many.signatures and hashing._prefixed.signatures
    assert len(gather._gather.signatures) >= 3


def test_warmup_covers_request_types():
    kernels.warmup()
    n_before = len(exact._topk_scan.signatures)
    items = np.random.default_rng(1).standard_normal((100, 12)).astype(np.float32)
    kernels.topk(items[:4], items, 5, metric="cosine", allowed=np.ones(100, dtype=bool))
    kernels.topk(items[0], items, 5, exclude=kernels.exclusions_csr([[1, 2, 3]]))
    assert len(exact._topk_scan.signatures) == n_before
