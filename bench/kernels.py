"""Retrieval kernel benchmark: Numba vs NumPy vs FAISS on one catalogue, all in the same run.

Run as `python -m bench.kernels` (`--items` / `--queries` to shrink it). Prints Markdown tables
and writes bench/results/kernels.json. Methods are timed in interleaved rounds (A, B, C, A, B, C,
...) so drifts of this shared machine hit every method alike; the best round is reported by
default (the closest estimate of uncontended speed when other jobs share the cores).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np

import kernels
from kernels.ivf import build_ivf, ivf_topk, quantize_ivf

RESULTS = Path(__file__).resolve().parent / "results" / "kernels.json"


def make_catalogue(n: int, d: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries around the same 2,000 Gaussian cluster centres (embedding-like data)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, d), dtype=np.float32)
    rows = n + n_queries
    data = centres[rng.integers(0, 2000, rows)]
    data += 0.5 * rng.standard_normal((rows, d), dtype=np.float32)
    return np.ascontiguousarray(data[:n]), np.ascontiguousarray(data[n:])


@numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _matrix_sum(x):
    total = 0.0
    for i in numba.prange(x.shape[0]):
        row = np.float32(0.0)
        for t in range(x.shape[1]):
            row += x[i, t]
        total += row
    return total


def interleaved(fns: dict, rounds: int, stat: str) -> dict:
    """Milliseconds per method ("best" or "median" of interleaved rounds, after a warm-up call)."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    reduce = np.min if stat == "best" else np.median
    return {name: float(reduce(ts)) for name, ts in times.items()}


def time_to_ready() -> float:
    """Seconds for a new process to import kernels and warm up, the cache being warm now."""
    code = "import time; t = time.perf_counter(); import kernels; kernels.warmup(); print(time.perf_counter() - t)"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


def numpy_topk(q: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    scores = np.atleast_2d(q) @ items.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want, strict=True)]))


def exact_section(items, queries, k, rounds, stat, faiss) -> dict[str, dict[str, float]]:
    q1 = queries[0]
    q64 = queries[:64]
    index = None
    if faiss is not None:
        index = faiss.IndexFlatIP(items.shape[1])
        index.add(items)
    default_threshold = faiss.cvar.distance_compute_blas_threshold if faiss else None

    def faiss_search(q, threshold):
        faiss.cvar.distance_compute_blas_threshold = threshold
        index.search(np.atleast_2d(q), k)

    out = {}
    for label, q in (("1 query", q1), ("64 queries", q64)):
        fns = {
            "numba": lambda q=q: kernels.topk(q, items, k),
            "numpy": lambda q=q: numpy_topk(q, items, k),
            "bare matmul": lambda q=q: np.atleast_2d(q) @ items.T,
        }
        if faiss is not None:
            fns["faiss default"] = lambda q=q: faiss_search(q, default_threshold)
            fns["faiss tuned"] = lambda q=q: faiss_search(q, 20)
        if label == "1 query":
            fns["matrix sum (bandwidth)"] = lambda: _matrix_sum(items)
        out[label] = interleaved(fns, rounds, stat)
    if faiss is not None:
        faiss.cvar.distance_compute_blas_threshold = default_threshold
    return out


def exclusion_section(items, queries, k, rounds, stat, rng) -> dict[str, dict[str, float]]:
    out = {}
    for label, q in (("1 query", queries[:1]), ("64 queries", queries[:64])):
        excl = kernels.exclusions_csr(
            [rng.choice(items.shape[0], 1000, replace=False) for _ in range(len(q))]
        )
        out[label] = interleaved(
            {
                "no exclusions": lambda q=q: kernels.topk(q, items, k),
                "1,000 excluded per query": lambda q=q, e=excl: kernels.topk(
                    q, items, k, exclude=e
                ),
            },
            # Two cheap methods and a difference of a few percent: more rounds than elsewhere.
            3 * rounds,
            stat,
        )
    return out


def ivf_section(items, queries, k, n_lists, probes, rounds, stat) -> dict:
    t0 = time.perf_counter()
    index = build_ivf(items, n_lists, seed=0)
    build_s = time.perf_counter() - t0
    variants = {
        "ivf (rows gathered from items)": index,
        "ivf float32 list-ordered copy": quantize_ivf(items, index, "float32"),
        "ivf int8 codes + exact rescore": quantize_ivf(items, index, "int8"),
    }
    exact_ids, _ = kernels.topk(queries, items, k)
    q1 = queries[:1]
    runs = {("exact (numba)", None): lambda: kernels.topk(queries, items, k)}
    ones = {("exact (numba)", None): lambda: kernels.topk(q1, items, k)}
    found = {("exact (numba)", None): exact_ids}
    for nprobe in probes:
        for name, idx in variants.items():
            runs[name, nprobe] = lambda idx=idx, p=nprobe: ivf_topk(queries, items, idx, k, p)
            ones[name, nprobe] = lambda idx=idx, p=nprobe: ivf_topk(q1, items, idx, k, p)
            found[name, nprobe] = ivf_topk(queries, items, idx, k, nprobe)[0]
    # Every configuration in one interleaved set, batch and single query alike.
    fns = {("batch", *key): fn for key, fn in runs.items()}
    fns.update({("one", *key): fn for key, fn in ones.items()})
    ms = interleaved(fns, rounds, stat)
    rows = [
        {
            "variant": name,
            "nprobe": nprobe,
            "recall": recall(found[name, nprobe], exact_ids),
            "ms": ms["batch", name, nprobe],
            "one_ms": ms["one", name, nprobe],
        }
        for name, nprobe in runs
    ]
    exact_ms = rows[0]["ms"]
    n_q = len(queries)
    for row in rows:
        row["qps"] = n_q / row["ms"] * 1e3
        row["speedup"] = exact_ms / row["ms"]
    return {"n_lists": n_lists, "build_s": build_s, "n_queries": n_q, "rows": rows}


# (catalogue size, k) of single-query searches: where scoring everything and sorting once
# (kernels._dense) beats the streaming heap scan, which sets kernels.exact's dispatch bounds.
DENSE_SHAPES = (
    (400, 10),
    (400, 200),
    (1000, 10),
    (1000, 100),
    (4000, 10),
    (4000, 250),
    (16000, 1000),
    (100_000, 200),
    (100_000, 6250),
)


def dense_section(d: int, rounds: int, stat: str) -> list[dict]:
    """One query with 50 exclusions: dense scan vs heap scan vs NumPy argpartition, per shape."""
    from kernels import exact
    from kernels._dense import dense_topk
    from kernels.inputs import prepare_search

    rows = []
    for n, k in DENSE_SHAPES:
        items, queries = make_catalogue(n, d, 1, seed=n)
        excl = kernels.exclusions_csr([np.arange(0, n, max(1, n // 50))[:50]])
        q, indptr, ex, mask, k_eff = prepare_search(queries[0], items, k, "ip", excl, None)[:5]
        ids = np.empty((1, k_eff), dtype=np.int64)
        scores = np.empty((1, k_eff), dtype=np.float32)

        def dense(q=q, items=items, indptr=indptr, ex=ex, mask=mask, k=k_eff, i=ids, s=scores):
            dense_topk(q, items, False, indptr, ex, mask, k, i, s)

        def heap(q=q, items=items, indptr=indptr, ex=ex, mask=mask, k=k_eff):
            exact._scan(q, items, k, False, indptr, ex, mask, 1)

        def numpy(q=queries[0], items=items, k=k_eff, ex=excl[1]):
            score = items @ q
            score[ex] = -np.inf
            top = np.argpartition(-score, k - 1)[:k]
            return top[np.argsort(-score[top], kind="stable")]

        ms = interleaved({"dense": dense, "heap": heap, "numpy": numpy}, rounds, stat)
        rows.append({"n_items": n, "k": k, "dense_picked": exact.uses_dense_scan(1, n, k), **ms})
    return rows


def print_dense(rows: list[dict], d: int) -> None:
    print(f"\n### One query, dense scan vs heap scan, {d}-d, 50 exclusions (µs)\n")
    print("| items | k | dense | heap | NumPy | dense vs heap | dispatch picks |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {r['n_items']:,} | {r['k']:,} | {1e3 * r['dense']:.0f} | {1e3 * r['heap']:.0f} "
            f"| {1e3 * r['numpy']:.0f} | {r['heap'] / r['dense']:.1f}x "
            f"| {'dense' if r['dense_picked'] else 'heap'} |"
        )


def print_tables(res: dict) -> None:
    n, d, k = res["n_items"], res["d"], res["k"]
    print(f"\n### Exact top-k, {n:,} x {d} float32, k = {k} (ms, {res['timing']})\n")
    for label, row in res["exact"].items():
        print(f"**{label}**\n\n| method | ms |\n| --- | ---: |")
        for name, ms in sorted(row.items(), key=lambda kv: kv[1]):
            print(f"| {name} | {ms:.1f} |")
        print()
    one = res["exact"]["1 query"]
    gbps = res["bytes"] / one["numba"] / 1e6
    ref = res["bytes"] / one["matrix sum (bandwidth)"] / 1e6
    print(
        f"One query: {gbps:.1f} GB/s = {100 * gbps / ref:.0f}% of the matrix-sum bandwidth ({ref:.1f} GB/s)."
    )
    gf = 2 * 64 * n * d / res["exact"]["64 queries"]["numba"] / 1e6
    print(f"64 queries: {gf:.0f} GFLOP/s.\n")
    print("### Exclusions (Numba, ms)\n\n| queries | none | 1,000 excluded per query | slowdown |")
    print("| --- | ---: | ---: | ---: |")
    for label, row in res["exclusions"].items():
        a, b = row["no exclusions"], row["1,000 excluded per query"]
        print(f"| {label} | {a:.1f} | {b:.1f} | {100 * (b / a - 1):+.1f}% |")
    ivf = res["ivf"]
    print(
        f"\n### IVF, {ivf['n_lists']} lists (build {ivf['build_s']:.1f} s), "
        f"{ivf['n_queries']} queries per batch, recall@{k} vs exact\n"
    )
    print(
        "| variant | nprobe | recall | ms / batch | queries/s | vs exact | 1 query ms |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for row in ivf["rows"]:
        p = "-" if row["nprobe"] is None else row["nprobe"]
        print(
            f"| {row['variant']} | {p} | {row['recall']:.3f} | {row['ms']:.1f} | "
            f"{row['qps']:,.0f} | {row['speedup']:.1f}x | {row['one_ms']:.2f} |"
        )
    print(
        f"\nTime to ready: a fresh process with a warm Numba cache imports kernels and runs "
        f"kernels.warmup() in {res['ready_s']:.2f} s (this run's first warmup, which compiles "
        f"whatever the cache lacked: {res['warmup_s']:.2f} s)."
    )
    print_dense(res["dense"], res["d"])
    print(f"Load average before / after the run: {res['load_before']} / {res['load_after']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=256, help="IVF batch (exact uses 1 and 64)")
    parser.add_argument("--lists", type=int, default=1024)
    parser.add_argument("--probes", type=int, nargs="+", default=[8, 16, 24, 32, 64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--stat",
        choices=["best", "median"],
        default="best",
        help="best estimates uncontended speed on a shared machine; median includes the noise",
    )
    parser.add_argument("--only", choices=["dense"], help="run one section only")
    args = parser.parse_args()
    if args.only == "dense":
        kernels.warmup()
        rows = dense_section(args.dim, max(args.rounds, 30), args.stat)
        print_dense(rows, args.dim)
        out = args.out.with_name("kernels_dense.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
        return
    try:
        import faiss
    except ImportError:
        faiss = None
        print("faiss-cpu not installed (pip install -e '.[bench]'): FAISS columns skipped")
    load_before = [round(x, 2) for x in os.getloadavg()]
    warmup_s = kernels.warmup()
    ready_s = time_to_ready()
    items, queries = make_catalogue(args.items, args.dim, max(64, args.queries), seed=0)
    rng = np.random.default_rng(1)
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {numba.config.NUMBA_NUM_THREADS} threads",
        "n_items": args.items,
        "d": args.dim,
        "k": args.k,
        "bytes": items.nbytes,
        "warmup_s": warmup_s,
        "ready_s": ready_s,
        "timing": f"{args.stat} of {args.rounds} interleaved rounds",
        "exact": exact_section(items, queries, args.k, args.rounds, args.stat, faiss),
        "exclusions": exclusion_section(items, queries, args.k, args.rounds, args.stat, rng),
        "ivf": ivf_section(
            items, queries[: args.queries], args.k, args.lists, args.probes, args.rounds, args.stat
        ),
        "dense": dense_section(args.dim, max(args.rounds, 30), args.stat),
    }
    res["load_before"] = load_before
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print_tables(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
