"""Plain NumPy references for every kernel: slow, obvious, and the ground truth in tests."""

from collections.abc import Sequence

import numpy as np


def topk_ref(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    metric: str = "ip",
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as `kernels.topk`, by a full score matrix and a stable lexicographic sort."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    x = np.asarray(items, dtype=np.float32)
    if metric == "cosine":
        q = _unit_rows(q)
        x = _unit_rows(x)
    scores = (q.astype(np.float64) @ x.astype(np.float64).T).astype(np.float32)
    ids = np.full((q.shape[0], k), -1, dtype=np.int64)
    out = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    for r in range(q.shape[0]):
        ok = np.ones(x.shape[0], dtype=bool)
        if allowed is not None:
            ok &= np.asarray(allowed).astype(bool)
        if exclude is not None:
            indptr, indices = exclude
            ex = indices[indptr[r] : indptr[r + 1]]
            ok[ex[(ex >= 0) & (ex < x.shape[0])]] = False
        cand = np.flatnonzero(ok)
        order = np.lexsort((cand, -scores[r, cand]))[:k]
        ids[r, : order.size] = cand[order]
        out[r, : order.size] = scores[r, cand[order]]
    return ids, out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros(x.shape, dtype=np.float64), where=norms > 0)


def murmur3_32_ref(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32 of `data`, transcribed from Austin Appleby's MurmurHash3.cpp."""
    mask = 0xFFFFFFFF
    c1, c2 = 0xCC9E2D51, 0x1B873593

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    h = seed & mask
    n_blocks = len(data) // 4
    for b in range(n_blocks):
        k = int.from_bytes(data[4 * b : 4 * b + 4], "little")
        k = rotl((k * c1) & mask, 15) * c2 & mask
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
    tail = data[4 * n_blocks :]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= rotl((k * c1) & mask, 15) * c2 & mask
    h ^= len(data) & mask
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def feature_buckets_ref(
    field: str, values: Sequence[object], n_buckets: int, seed: int = 0
) -> np.ndarray:
    """`kernels.feature_buckets` one value at a time."""
    out = []
    for v in values:
        missing = v is None or (isinstance(v, float) and v != v)
        key = f"{field}={'__missing__' if missing else v}"
        out.append(murmur3_32_ref(key.encode("utf-8"), seed) % n_buckets)
    return np.asarray(out, dtype=np.int64)


def gather_rows_ref(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of `table` by id; id -1 gives a zero row."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.zeros((ids.shape[0], *table.shape[1:]), dtype=table.dtype)
    ok = ids >= 0
    out[ok] = table[ids[ok]]
    return out


def mmr_ref(ids: np.ndarray, scores: np.ndarray, items: np.ndarray, k: int, lam: float = 0.7):
    """`kernels.diversity.mmr` with NumPy and Python loops (float64 similarities)."""
    ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
    out_ids = np.full((ids.shape[0], k), -1, dtype=np.int64)
    out_scores = np.full((ids.shape[0], k), -np.inf, dtype=np.float32)
    for q in range(ids.shape[0]):
        valid = [r for r in range(ids.shape[1]) if ids[q, r] >= 0]
        vecs = _unit_rows(np.asarray(items)[np.maximum(ids[q], 0)])
        picked: list[int] = []
        while valid and len(picked) < k:
            values = {
                r: lam * scores[q, r]
                - (1 - lam) * max((vecs[r] @ vecs[p] for p in picked), default=0.0)
                for r in valid
            }
            best = max(valid, key=lambda r: (values[r], -r))
            valid.remove(best)
            out_ids[q, len(picked)] = ids[q, best]
            out_scores[q, len(picked)] = scores[q, best]
            picked.append(best)
    return out_ids, out_scores


def cap_per_category_ref(ids, scores, categories, max_per_category: int, k: int):
    """`kernels.diversity.cap_per_category` with a Python Counter."""
    ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
    out_ids = np.full((ids.shape[0], k), -1, dtype=np.int64)
    out_scores = np.full((ids.shape[0], k), -np.inf, dtype=np.float32)
    for q in range(ids.shape[0]):
        counts: dict[int, int] = {}
        n = 0
        for i, s in zip(ids[q], scores[q], strict=True):
            if n == k:
                break
            if i < 0:
                continue
            c = int(categories[i])
            if c >= 0:
                if counts.get(c, 0) >= max_per_category:
                    continue
                counts[c] = counts.get(c, 0) + 1
            out_ids[q, n], out_scores[q, n] = i, s
            n += 1
    return out_ids, out_scores
