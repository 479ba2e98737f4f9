"""Training loops: CTR models with binary cross-entropy, MF with BPR, Platt calibration.

Loops live here, not in the modules; everything is seeded so runs reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
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


def fit_ctr(
    model: nn.Module, cat: np.ndarray, num: np.ndarray, label: np.ndarray, config: FitConfig
) -> list[float]:
    """Minimise logloss; returns the mean loss per epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cat_t, num_t = torch.from_numpy(cat), torch.from_numpy(num)
    y_t = torch.from_numpy(label.astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    history = []
    model.train()
    for epoch in range(config.epochs):
        total, count = 0.0, 0
        batches = _batches(len(label), config.batch_size, rng)
        for idx in tqdm(
            batches,
            desc=f"{type(model).__name__} epoch {epoch + 1}",
            disable=not config.progress,
            leave=False,
        ):
            i = torch.from_numpy(idx)
            opt.zero_grad()
            loss = loss_fn(model(cat_t[i], num_t[i]), y_t[i])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
    model.eval()
    return history


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
