"""Training loops and closed-form fits: CTR models with binary cross-entropy, MF with BPR,
implicit ALS, EASE and item-kNN for retrieval, Platt and isotonic calibration.

Loops live here, not in the modules; everything is seeded so runs reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 3
    batch_size: int = 2048
    lr: float = 0.01
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = True


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class Rows(Protocol):
    """Encoded CTR rows (cat int64 [n, F], num float32 [n, N], label [n]) in chunks that each
    fit in memory: one chunk of arrays (:class:`ArrayRows`), or files read a chunk at a time
    (:class:`training.streaming_ctr.DiskRows`)."""

    def __len__(self) -> int: ...

    @property
    def n_chunks(self) -> int: ...

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def labels(self) -> np.ndarray: ...

    @property
    def positives(self) -> int: ...

    def rate(self) -> float: ...

    def head(self, rows: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class ArrayRows:
    """Rows held in memory, as one chunk."""

    cat: np.ndarray
    num: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @property
    def n_chunks(self) -> int:
        return 1

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.cat, self.num, self.label

    def labels(self) -> np.ndarray:
        return self.label

    @property
    def positives(self) -> int:
        return int(self.label.sum())

    def rate(self) -> float:
        """The share of positive labels."""
        return float(self.label.mean())

    def head(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``rows`` rows' (cat, num)."""
        return self.cat[:rows], self.num[:rows]


def fit_ctr(
    model: nn.Module,
    cat: np.ndarray,
    num: np.ndarray,
    label: np.ndarray,
    config: FitConfig,
    valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[float]:
    """Minimise logloss; returns the mean training loss per epoch.

    With ``valid`` (cat, num, label), the weights of the epoch with the lowest validation
    logloss are kept: deep CTR models overfit hashed id embeddings after an epoch or two.
    """
    return fit_ctr_rows(
        model,
        ArrayRows(cat, num, label),
        config,
        None if valid is None else ArrayRows(*valid),
    )


def fit_ctr_rows(
    model: nn.Module, rows: Rows, config: FitConfig, valid: Rows | None = None
) -> list[float]:
    """:func:`fit_ctr` over rows in chunks: each epoch visits the chunks in a fresh random
    order and draws shuffled batches within each, so only one chunk is in memory. Rows in one
    chunk train exactly as :func:`fit_ctr` on the same arrays."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimisers = _ctr_optimisers(model, config)
    loss_fn = nn.BCEWithLogitsLoss()
    history = []
    best_loss, best_state = np.inf, None
    y_valid = None if valid is None or not len(valid) else valid.labels()
    for epoch in range(config.epochs):
        model.train()
        total, count = 0.0, 0
        order = rng.permutation(rows.n_chunks) if rows.n_chunks > 1 else range(rows.n_chunks)
        for c in order:
            cat, num, label = rows.chunk(int(c))
            cat_t, num_t = torch.from_numpy(cat), torch.from_numpy(num)
            y_t = torch.from_numpy(label.astype(np.float32))
            batches = _batches(len(label), config.batch_size, rng)
            for idx in tqdm(
                batches,
                desc=f"{type(model).__name__} epoch {epoch + 1}",
                disable=not config.progress,
                leave=False,
            ):
                i = torch.from_numpy(idx)
                for opt in optimisers:
                    opt.zero_grad()
                loss = loss_fn(model(cat_t[i], num_t[i]), y_t[i])
                loss.backward()
                for opt in optimisers:
                    opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
        history.append(total / max(count, 1))
        if valid is not None and y_valid is not None:
            logits = predict_rows(model, valid)
            y = torch.from_numpy(y_valid.astype(np.float32))
            valid_loss = float(loss_fn(torch.from_numpy(logits), y))
            if valid_loss < best_loss:
                best_loss = valid_loss
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _ctr_optimisers(model: nn.Module, config: FitConfig) -> list[torch.optim.Optimizer]:
    """Lazy Adam on the hashed tables (sparse gradients: a step touches only the rows of the
    batch, not the whole table, which made dense Adam 10x slower per step), Adam with weight
    decay on everything else."""
    sparse = [
        p
        for m in model.modules()
        if isinstance(m, nn.Embedding) and m.sparse
        for p in m.parameters()
    ]
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    optimisers: list[torch.optim.Optimizer] = []
    if sparse:
        optimisers.append(torch.optim.SparseAdam(sparse, lr=config.lr))
    if dense:
        optimisers.append(torch.optim.Adam(dense, lr=config.lr, weight_decay=config.weight_decay))
    return optimisers


@torch.no_grad()
def predict_logits(
    model: nn.Module, cat: np.ndarray, num: np.ndarray, batch_size: int = 65536
) -> np.ndarray:
    model.eval()
    out = [
        model(
            torch.from_numpy(cat[i : i + batch_size]), torch.from_numpy(num[i : i + batch_size])
        ).numpy()
        for i in range(0, len(cat), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def predict_rows(model: nn.Module, rows: Rows, batch_size: int = 65536) -> np.ndarray:
    """:func:`predict_logits` over every chunk of ``rows``, in order."""
    out = [predict_logits(model, *rows.chunk(c)[:2], batch_size) for c in range(rows.n_chunks)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def fit_platt(logits: np.ndarray, label: np.ndarray, steps: int = 300) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising logloss of sigmoid(a * logit + b) on held-out rows."""
    x = torch.from_numpy(logits.astype(np.float32))
    y = torch.from_numpy(label.astype(np.float32))
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
    loss_fn = nn.BCEWithLogitsLoss()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(params[0] * x + params[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = params.detach().tolist()
    return float(a), float(b)


def fit_isotonic(logits: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of the label on the logit: its knots (x ascending, y), between which
    the calibrated pCTR is interpolated linearly and outside which it is clipped."""
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(logits.astype(np.float64), label.astype(np.float64))
    return np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)


def fit_bpr(
    model: nn.Module,
    users: np.ndarray,
    items: np.ndarray,
    n_items: int,
    config: FitConfig,
    reg: float = 1e-4,
) -> list[float]:
    """Bayesian personalised ranking with one uniformly sampled negative per positive."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    u_all, i_all = (
        torch.from_numpy(np.array(users, dtype=np.int64)),
        torch.from_numpy(np.array(items, dtype=np.int64)),
    )
    history = []
    model.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        batches = _batches(len(users), config.batch_size, rng)
        for idx in tqdm(
            batches, desc=f"BPR epoch {epoch + 1}", disable=not config.progress, leave=False
        ):
            i = torch.from_numpy(idx)
            u, pos = u_all[i], i_all[i]
            neg = torch.from_numpy(rng.integers(0, n_items, len(idx)))
            opt.zero_grad()
            diff = model(u, pos) - model(u, neg)
            loss = -nn.functional.logsigmoid(diff).mean()
            penalty = (
                reg
                * (
                    model.users(u).pow(2).sum()
                    + model.items(pos).pow(2).sum()
                    + model.items(neg).pow(2).sum()
                )
                / len(idx)
            )
            (loss + penalty).backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
    model.eval()
    return history


def _dense(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """Binary user x item matrix (float64) from (user, item) pairs."""
    x = np.zeros((n_users, n_items), dtype=np.float64)
    x[users, items] = 1.0
    return x


def fit_ease(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    reg: float,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """EASE (Steck 2019): the item-item weights B [n_items, n_items] minimising
    ||X - XB||^2 + reg ||B||^2 with diag(B) = 0, in closed form: B = I - P / diag(P),
    P = (X^T X + reg I)^-1. Scores are X_u B. Cubic in the catalogue size. ``weights`` (one
    per pair) replace X's ones, e.g. a time decay."""
    x = _dense(users, items, n_users, n_items)
    if weights is not None:
        x[users, items] = weights
    gram = x.T @ x
    gram[np.diag_indices(n_items)] += reg
    with threadpool_limits(limits=2):
        p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices(n_items)] = 0.0
    return b


def fit_item_knn(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    neighbours: int = 100,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Item-item cosine similarity over co-occurrence, keeping each item's ``neighbours``
    most similar items (the rest zero, the diagonal zero); scores are X_u S. ``weights``
    (one per pair) replace X's ones, e.g. a time decay, as in :func:`fit_ease`."""
    x = _dense(users, items, n_users, n_items)
    if weights is not None:
        x[users, items] = weights
    co = x.T @ x
    norms = np.sqrt(np.diag(co))
    sim = co / np.maximum(np.outer(norms, norms), 1e-12)
    sim[np.diag_indices(n_items)] = 0.0
    if 0 < neighbours < n_items:
        # Per column (target item), zero all but the strongest neighbours.
        cut = np.partition(sim, n_items - neighbours, axis=0)[n_items - neighbours]
        sim[sim < cut[None, :]] = 0.0
    return sim


def fit_ials(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    dim: int = 64,
    reg: float = 0.05,
    alpha: float = 10.0,
    iterations: int = 15,
    seed: int = 0,
    progress: bool = True,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS (Hu, Koren, Volinsky 2008): confidence 1 + alpha on observed pairs, 1 on
    the rest; alternating exact least squares with the Y^T Y trick, so each side costs
    O(nnz * dim^2) plus one batched ``np.linalg.solve`` over stacked dim x dim systems.
    ``weights`` (one per pair, e.g. a time decay) make an observed pair's confidence
    1 + alpha * weight. Returns (user, item) factors, float64."""
    rng = np.random.default_rng(seed)
    w = np.ones(len(users)) if weights is None else np.asarray(weights, dtype=np.float64)
    pairs, first = np.unique(np.stack([users, items], axis=1), axis=0, return_index=True)
    w = w[first]
    by_user = _grouped(pairs[:, 0], pairs[:, 1], n_users, w)
    by_item = _grouped(pairs[:, 1], pairs[:, 0], n_items, w)
    u = rng.normal(0.0, 0.01, (n_users, dim))
    v = rng.normal(0.0, 0.01, (n_items, dim))
    with threadpool_limits(limits=2):
        for _ in tqdm(range(iterations), desc="iALS", disable=not progress, leave=False):
            u = _ials_side(v, by_user, reg, alpha)
            v = _ials_side(u, by_item, reg, alpha)
    return u, v


def _grouped(
    rows: np.ndarray, cols: np.ndarray, n_rows: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (indptr, indices, weights) of ``cols`` grouped by ``rows``."""
    order = np.argsort(rows, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    return indptr.astype(np.int64), cols[order].astype(np.int64), weights[order]


def _ials_side(
    fixed: np.ndarray, csr: tuple[np.ndarray, np.ndarray, np.ndarray], reg: float, alpha: float
) -> np.ndarray:
    """Solve every row's (F^T F + alpha sum_{i in row} w_i f_i f_i^T + reg I) x =
    sum_{i in row} (1 + alpha w_i) f_i. The per-row Gram matrices are one small BLAS product
    each: a vectorised outer-product-and-segment-sum moves nnz * dim^2 floats through memory
    and measured 30x slower here."""
    indptr, indices, weights = csr
    n_rows, dim = indptr.size - 1, fixed.shape[1]
    a = np.repeat((fixed.T @ fixed + reg * np.eye(dim))[None], n_rows, axis=0)
    b = np.zeros((n_rows, dim))
    for r in range(n_rows):
        f = fixed[indices[indptr[r] : indptr[r + 1]]]
        if len(f):
            c = alpha * weights[indptr[r] : indptr[r + 1]]
            a[r] += (f.T * c) @ f
            b[r] = (1.0 + c) @ f
    return np.linalg.solve(a, b[..., None])[..., 0]
