"""Run by test_kernels_gpu.py in a subprocess with NUMBA_ENABLE_CUDASIM=1 (set before Numba loads).

Compares the CUDA top-k with the CPU top-k on small integer-valued data; exits non-zero on a
mismatch. Kept tiny: the simulator runs every CUDA thread as a Python thread.
"""

import os
import sys

import numpy as np

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

from kernels import exclusions_csr, gpu, topk  # noqa: E402

# Small segments and score chunks so several chunks and segments per query are exercised.
gpu._SEGMENT = 64
gpu._SCORE_BUDGET = 3 * 128


def main() -> int:
    assert gpu.available() and not gpu.use_gpu_by_default()
    rng = np.random.default_rng(0)
    items = rng.integers(-2, 3, size=(300, 5)).astype(np.float32)
    items[7] = 0.0
    queries = rng.integers(-2, 3, size=(3, 5)).astype(np.float32)
    cases = [
        {"k": 10},
        {"k": 8, "metric": "cosine"},
        {"k": 6, "exclude": exclusions_csr([[0, 1, 2], [], np.arange(250)])},
        {"k": 5, "allowed": rng.random(300) < 0.2},
        {"k": 320},
    ]
    for case in cases:
        k = case.pop("k")
        want_ids, want_scores = topk(queries, items, k, device="cpu", **case)
        got_ids, got_scores = topk(queries, items, k, device="gpu", **case)
        if not np.allclose(got_scores, want_scores, rtol=1e-6, atol=1e-6, equal_nan=False):
            print("score mismatch", k, case, got_scores, want_scores)
            return 1
        if case.get("metric") != "cosine" and not np.array_equal(got_ids, want_ids):
            print("id mismatch", k, case, got_ids, want_ids)
            return 1
    one = topk(queries[0], items, 4, device="gpu")
    assert one[0].shape == (1, 4)
    print("cudasim topk matches cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
