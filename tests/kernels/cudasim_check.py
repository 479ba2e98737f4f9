"""Run by test_kernels_gpu.py in a subprocess with NUMBA_ENABLE_CUDASIM=1 (set before Numba loads).

Compares the CUDA top-k with the CPU top-k on small data that walks every path of the radix
select: ties, a bin that needs refining, more ties than the candidate buffer (answered by the
CPU), filters, cosine, fewer qualifying items than k. Exits non-zero on a mismatch. Kept tiny:
the simulator runs every CUDA thread as a Python thread.
"""

import os
import sys

import numpy as np

assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

from kernels import exclusions_csr, gpu, topk  # noqa: E402

# A small candidate buffer and select block, so refinement and overflow happen on small data.
gpu._CAP = 256
gpu.MAX_K = 128
gpu._SELECT_THREADS = 64
# Three queries take the wide score kernel, two the narrow one, one the matrix-vector one.
gpu._WIDE_FROM = 3
gpu._GEMV_MAX = 1


def compare(label, queries, items, k, **case) -> bool:
    want_ids, want_scores = topk(queries, items, k, device="cpu", **case)
    got_ids, got_scores = topk(queries, items, k, device="gpu", **case)
    if not np.allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5):
        print("score mismatch", label, got_scores, want_scores)
        return False
    if case.get("metric") != "cosine" and not np.array_equal(got_ids, want_ids):
        print("id mismatch", label, got_ids, want_ids)
        return False
    return True


def main() -> int:
    assert gpu.available() and not gpu.use_gpu_by_default()
    rng = np.random.default_rng(0)
    ints = rng.integers(-2, 3, size=(300, 5)).astype(np.float32)
    ints[7] = 0.0
    q_ints = rng.integers(-2, 3, size=(3, 5)).astype(np.float32)
    floats = rng.standard_normal((2000, 8)).astype(np.float32)
    q_floats = rng.standard_normal((3, 8)).astype(np.float32)
    same = np.ones((600, 5), dtype=np.float32)  # 600 equal scores > the 256-slot buffer
    same[::2] = rng.standard_normal((300, 5))
    cases = [
        ("ties", q_ints, ints, 10, {}),
        ("narrow ties", q_ints[:2], ints, 10, {}),
        ("gemv ties", q_ints[:1], ints, 10, {}),
        ("gemv cosine", q_ints[1:2], ints, 9, {"metric": "cosine", "allowed": ints[:, 1] >= 0}),
        ("gemv exclude", q_floats[:1], floats, 50, {"exclude": exclusions_csr([[3, 4, 5]])}),
        (
            "narrow cosine allowed",
            q_ints[:2],
            ints,
            7,
            {"metric": "cosine", "allowed": ints[:, 0] > 0},
        ),
        ("cosine", q_ints, ints, 8, {"metric": "cosine"}),
        ("exclude", q_ints, ints, 6, {"exclude": exclusions_csr([[0, 1, 2], [], np.arange(250)])}),
        ("allowed", q_ints, ints, 5, {"allowed": rng.random(300) < 0.2}),
        ("few allowed", q_ints, ints, 100, {"allowed": rng.random(300) < 0.1}),
        ("refine", q_floats, floats, 100, {}),
        ("refine exclude", q_floats, floats, 50, {"exclude": exclusions_csr([[5], [], []])}),
        ("overflow to cpu", np.abs(q_ints), same, 20, {}),
    ]
    ok = all(compare(label, q, items, k, **case) for label, q, items, k, case in cases)
    nan_items = floats[:300].copy()
    nan_items[3] = np.nan
    ok = ok and compare("nan", q_floats, nan_items, 100)
    one = topk(q_ints[0], ints, 4, device="gpu")
    assert one[0].shape == (1, 4)
    if ok:
        print("cudasim topk matches cpu")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
