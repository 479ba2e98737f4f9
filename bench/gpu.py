"""GPU check and benchmark: the numba.cuda top-k against the CPU kernels on a real device.

Run as `python -m bench.gpu` on a machine with an NVIDIA GPU (the `device` tool lends one now
and then; CI has none). It needs numpy, numba with its CUDA target and, when present, torch for
a GPU baseline (matrix product + `torch.topk`); polars, onnxruntime and the rest of the engine
are not imported, so it runs on a bare CUDA image. It prints:

1. what the process sees: GPU, drivers, which path `kernels.topk` takes by default, which
   onnxruntime providers exist and what `engine.runtime.choose_providers` picks;
2. correctness: GPU top-k vs CPU top-k on tie-heavy integer data (same ids, same order) and on
   a 1M-item catalogue with exclusions and an allowed mask (same scores, recall 1.0);
3. speed, side by side in interleaved rounds: Numba CPU, numba.cuda, torch on the GPU.

Writes bench/results/gpu.json. Exits non-zero when a correctness check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"


def environment() -> dict[str, Any]:
    import numba

    from kernels import gpu

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cpu_count": os.cpu_count(),
        "gpu_available": gpu.available(),
        "gpu_by_default": gpu.use_gpu_by_default(),
    }
    if gpu.available() and not gpu.simulated():
        device = gpu.cuda.get_current_device()
        name = device.name
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["compute_capability"] = list(device.compute_capability)
    try:
        import onnxruntime as ort

        from engine.runtime import choose_providers, gpu_visible

        available = ort.get_available_providers()
        info["onnxruntime"] = ort.__version__
        info["ort_available_providers"] = available
        info["gpu_visible"] = gpu_visible()
        info["ort_chosen_providers"] = choose_providers("auto", available, gpu_visible())
    except Exception as exc:  # the bare CUDA image may lack onnxruntime or the engine's deps
        info["onnxruntime"] = f"not checked: {type(exc).__name__}: {exc}"
    return info


def check_ties() -> list[str]:
    """Integer-valued data: many equal scores, so ids and their order must match exactly."""
    from kernels import exclusions_csr, topk

    failures = []
    rng = np.random.default_rng(0)
    items = rng.integers(-2, 3, size=(20_000, 8)).astype(np.float32)
    items[7] = 0.0
    queries = rng.integers(-2, 3, size=(5, 8)).astype(np.float32)
    cases: list[dict[str, Any]] = [
        {"k": 10},
        {"k": 100},
        {"k": 8, "metric": "cosine"},
        {"k": 6, "exclude": exclusions_csr([[0, 1, 2], [], np.arange(15_000), [5], [9, 10]])},
        {"k": 5, "allowed": rng.random(20_000) < 0.2},
    ]
    for case in cases:
        k = case.pop("k")
        want_ids, want_scores = topk(queries, items, k, device="cpu", **case)
        got_ids, got_scores = topk(queries, items, k, device="gpu", **case)
        label = f"ties k={k} {sorted(case)}"
        if not np.allclose(got_scores, want_scores, rtol=1e-6, atol=1e-6):
            failures.append(f"{label}: scores differ")
        elif case.get("metric") != "cosine" and not np.array_equal(got_ids, want_ids):
            failures.append(f"{label}: ids differ")
    return failures


def catalogue(n: int, d: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from bench.kernels import make_catalogue

    return make_catalogue(n, d, n_queries, seed)


def check_large(items: np.ndarray, queries: np.ndarray, k: int) -> list[str]:
    """Random floats (no ties): same scores and the same id sets, with filters in the scan."""
    from kernels import exclusions_csr, topk

    rng = np.random.default_rng(1)
    n = items.shape[0]
    exclude = exclusions_csr([rng.choice(n, 500, replace=False) for _ in range(len(queries))])
    allowed = rng.random(n) < 0.5
    failures = []
    for case in ({}, {"exclude": exclude}, {"allowed": allowed}, {"metric": "cosine"}):
        want_ids, want_scores = topk(queries, items, k, device="cpu", **case)
        got_ids, got_scores = topk(queries, items, k, device="gpu", **case)
        same = np.mean([len(set(a) & set(b)) / k for a, b in zip(got_ids, want_ids, strict=True)])
        if not np.allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4) or same < 0.999:
            failures.append(f"large {sorted(case)}: recall {same:.4f}")
    return failures


def timings(items: np.ndarray, queries: np.ndarray, k: int, batches: list[int], rounds: int):
    from kernels import gpu, topk

    torch_items = None
    try:
        import torch

        if torch.cuda.is_available():
            torch_items = torch.from_numpy(items).cuda()
    except ImportError:
        torch = None  # type: ignore[assignment]

    def torch_topk(q: np.ndarray):
        scores = torch.from_numpy(q).cuda() @ torch_items.T
        values, ids = torch.topk(scores, k, dim=1)
        return ids.cpu().numpy(), values.cpu().numpy()

    rows = []
    for n_q in batches:
        q = np.ascontiguousarray(queries[:n_q])
        fns = {
            "numba_cpu": lambda q=q: topk(q, items, k, device="cpu"),
            "numba_cuda": lambda q=q: topk(q, items, k, device="gpu"),
        }
        if torch_items is not None:
            fns["torch_cuda"] = lambda q=q: torch_topk(q)
        for fn in fns.values():
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
        row = {"queries": n_q, **{name: float(np.median(ts)) for name, ts in times.items()}}
        gpu.stage_ms = {}
        for _ in range(3):
            topk(q, items, k, device="gpu")
        row["stages_ms"] = {name: round(ms / 3, 3) for name, ms in gpu.stage_ms.items()}
        gpu.stage_ms = None
        print(n_q, row, flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batches", default="1,16,64,256")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)

    from kernels import gpu

    env = environment()
    print(json.dumps(env, indent=1), flush=True)
    if not gpu.available():
        print("no CUDA device: nothing to measure")
        return 0
    failures = check_ties()
    batches = [int(b) for b in args.batches.split(",")]
    items, queries = catalogue(args.items, args.dim, max(batches), seed=0)
    failures += check_large(items, queries[:8], args.k)
    print("correctness:", failures or "ok", flush=True)
    rows = timings(items, queries, args.k, batches, args.rounds)
    names = [c for c in ("numba_cpu", "numba_cuda", "torch_cuda") if c in rows[0]]
    print(f"\n{args.items:,} x {args.dim} float32, k = {args.k}, median ms of {args.rounds}")
    print("| queries | " + " | ".join(names) + " | cpu / cuda | cuda / torch |")
    print("|---" * (len(names) + 3) + "|")
    for r in rows:
        cells = " | ".join(f"{r[c]:.2f}" for c in names)
        vs_torch = f"{r['numba_cuda'] / r['torch_cuda']:.2f}" if "torch_cuda" in r else ""
        speedup = r["numba_cpu"] / r["numba_cuda"]
        print(f"| {r['queries']} | {cells} | {speedup:.1f} | {vs_torch} |")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"environment": env, "failures": failures, "rows": rows}))
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu.json").write_text(RESULTS.read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
