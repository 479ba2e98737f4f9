"""warmup() leaves every serving-path kernel compiled, so no request ever waits for Numba."""

import sys

import numpy as np
from numba.core.registry import CPUDispatcher

import kernels
from kernels import _ivf_scan, exact, gather, hashing


def compiled_signatures() -> dict[str, int]:
    """Number of compiled specialisations of every Numba kernel in the kernels package."""
    counts = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("kernels."):
            for attr, value in vars(module).items():
                if isinstance(value, CPUDispatcher):
                    counts[f"{name}.{attr}"] = len(value.signatures)
    return counts


def test_warmup_compiles_serving_kernels():
    elapsed = kernels.warmup()
    assert elapsed > 0
    # Writable and read-only (memmap) item matrices: two specialisations of the scan.
    for kernel in (exact._stream_scan, exact._blocked_scan, exact.dense_topk):
        assert len(kernel.signatures) >= 2
    assert hashing._hash_many.signatures and hashing._prefixed.signatures
    assert len(gather._gather.signatures) >= 3 and len(gather._gather_serial.signatures) >= 3
    # int8 and float16 codes (the float32 kind shares the int8 type) x writable/read-only items.
    assert len(_ivf_scan.ivf_lists_scan.signatures) >= 4
    assert len(_ivf_scan.rescore_shortlist.signatures) >= 2


def test_requests_after_warmup_compile_nothing(tmp_path):
    kernels.warmup()
    before = compiled_signatures()
    rng = np.random.default_rng(1)
    items = rng.standard_normal((3000, 12)).astype(np.float32)
    np.save(tmp_path / "items.npy", items)
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    for table in (items, mapped):
        kernels.topk(items[:4], table, 5, metric="cosine", allowed=np.ones(3000, dtype=bool))
        kernels.topk(items[0], table, 5, exclude=kernels.exclusions_csr([[1, 2, 3]]))
        ids, scores = kernels.topk(
            items[:70], table, 20, exclude=kernels.exclusions_csr([[1]] * 70)
        )
        kernels.mmr(ids, scores, table, 5)
        kernels.gather_rows(table, ids[0])
    kernels.cap_per_category(ids, scores, np.arange(3000) % 7, 2, 5)
    index = kernels.build_ivf(items, 16, seed=0)
    for stored in (index, kernels.quantize_ivf(items, index, "int8")):
        kernels.ivf_topk(items[:3], mapped, stored, 5, nprobe=4, metric="cosine")
    kernels.feature_buckets("country", ["FR", None, 7], 100)
    kernels.gather_rows(np.zeros((5, 3), dtype=np.int64), np.array([1, -1]))
    assert compiled_signatures() == before
