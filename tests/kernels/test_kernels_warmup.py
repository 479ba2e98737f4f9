"""warmup() leaves every serving-path kernel compiled, so no request ever waits for Numba."""

import numpy as np

import kernels
from kernels import _ivf_scan, exact, gather, hashing


def test_warmup_compiles_serving_kernels():
    elapsed = kernels.warmup()
    assert elapsed > 0
    # Writable and read-only (memmap) item matrices: two specialisations of the scan.
    for kernel in (exact._stream_scan, exact._blocked_scan):
        assert len(kernel.signatures) >= 2
    assert hashing._hash_many.signatures and hashing._prefixed.signatures
    assert len(gather._gather.signatures) >= 3
    # int8 and float16 codes (the float32 kind shares the int8 type) x writable/read-only items.
    assert len(_ivf_scan.ivf_scan.signatures) >= 4


def test_warmup_covers_request_types():
    kernels.warmup()
    kernels_used = (exact._stream_scan, exact._blocked_scan, exact._merge)
    n_before = [len(kernel.signatures) for kernel in kernels_used]
    items = np.random.default_rng(1).standard_normal((100, 12)).astype(np.float32)
    kernels.topk(items[:4], items, 5, metric="cosine", allowed=np.ones(100, dtype=bool))
    kernels.topk(items[0], items, 5, exclude=kernels.exclusions_csr([[1, 2, 3]]))
    kernels.topk(items[:70], items, 5, exclude=kernels.exclusions_csr([[1]] * 70))
    assert [len(kernel.signatures) for kernel in kernels_used] == n_before
