"""Training the sequence model (:class:`training.models.sequence.SASRec`) on each user's
positives in time order, and the tables a retrieval bundle serves from it.

Each user's items (first positive time, then item row) are cut into windows of ``max_len + 1``
items; every position learns to predict the next item with a full softmax over the catalogue
(cross-entropy, which beats SASRec's sampled binary loss for next-item retrieval). The number
of epochs is the one hyper-parameter tuned on valid (every ``eval_every`` epochs, stopping
after ``patience`` evaluations without gain, or when the time budget is spent); the refit on
train + valid runs that many epochs, stopped early when the budget it was left is spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from training.models.sequence import SASRec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SequenceConfig:
    """The sequence model's size and training schedule."""

    dim: int = 64
    max_len: int = 50
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    lr: float = 0.001
    batch_size: int = 128
    max_epochs: int = 200
    eval_every: int = 5
    patience: int = 3
    # Only catalogues up to this size: the full softmax costs batch x max_len x items.
    max_items: int = 20_000
    seed: int = 0


@dataclass
class Sequences:
    """Every user's item rows in time order, as CSR (users without items have none)."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def of(cls, u: np.ndarray, i: np.ndarray, t: np.ndarray, n_users: int) -> Sequences:
        order = np.lexsort((i, t, u))
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.add.at(indptr, u + 1, 1)
        return cls(np.cumsum(indptr), i[order].astype(np.int64))

    def recent(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """CSR of each user's last ``max_len`` items (what a bundle ships for serving)."""
        lengths = np.minimum(np.diff(self.indptr), max_len)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = (
            np.concatenate(
                [self.items[e - n : e] for e, n in zip(self.indptr[1:], lengths, strict=True)]
            )
            if lengths.sum()
            else np.zeros(0, np.int64)
        )
        return indptr, items.astype(np.int64)


def left_padded(rows: list[np.ndarray], max_len: int, pad: int) -> np.ndarray:
    """[len(rows), max_len] int64: each row's last ``max_len`` items, right-aligned."""
    out = np.full((len(rows), max_len), pad, dtype=np.int64)
    for r, items in enumerate(rows):
        items = items[-max_len:]
        if len(items):
            out[r, max_len - len(items) :] = items
    return out


def windows(seqs: Sequences, max_len: int, pad: int) -> np.ndarray:
    """[n_windows, max_len + 1] training windows: each user's items cut from the newest
    backwards into chunks of ``max_len + 1`` (overlapping by one, so every transition is a
    target once), left-padded."""
    chunks = []
    for a, b in zip(seqs.indptr[:-1], seqs.indptr[1:], strict=True):
        end = int(b)
        while end - int(a) >= 2:
            chunks.append(seqs.items[max(int(a), end - max_len - 1) : end])
            end -= max_len
    return left_padded(chunks, max_len + 1, pad)


@torch.no_grad()
def user_vectors(model: SASRec, seqs: Sequences, batch_size: int = 1024) -> np.ndarray:
    """[n_users, D] float32: the user tower on each user's last ``max_len`` items."""
    model.eval()
    n = len(seqs.indptr) - 1
    rows = [seqs.items[seqs.indptr[u] : seqs.indptr[u + 1]] for u in range(n)]
    padded = left_padded(rows, model.max_len, model.pad)
    out = [
        model(torch.from_numpy(padded[s : s + batch_size])).numpy() for s in range(0, n, batch_size)
    ]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def fit_sasrec(
    seqs: Sequences,
    n_items: int,
    config: SequenceConfig,
    epochs: int | None = None,
    validate: Callable[[SASRec], float] | None = None,
    deadline: float | None = None,
) -> tuple[SASRec, int, dict[int, float]]:
    """Train on ``seqs``: ``epochs`` of them, or (with ``validate``, a score to maximise) until
    it stops improving, keeping the best evaluated weights. Stops at ``deadline``
    (``time.monotonic()``) whatever the count. Returns the model, the epochs behind its
    weights and the validation score by epoch."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SASRec(n_items, config.dim, config.max_len, config.heads, config.layers, config.dropout)
    data = torch.from_numpy(windows(seqs, config.max_len, model.pad))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=model.pad)
    budget = epochs if epochs is not None else config.max_epochs
    scores: dict[int, float] = {}
    best, best_epoch, best_state, stale = -np.inf, 0, None, 0
    done = 0
    for epoch in range(1, budget + 1):
        model.train()
        for idx in np.array_split(
            rng.permutation(len(data)), max(1, len(data) // config.batch_size)
        ):
            batch = data[torch.from_numpy(idx)]
            hidden = model.encode(batch[:, :-1])
            logits = hidden @ model.item_table().T
            loss = loss_fn(logits.reshape(-1, n_items), batch[:, 1:].reshape(-1))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        done = epoch
        out_of_time = deadline is not None and time.monotonic() > deadline
        if validate is not None and (epoch % config.eval_every == 0 or out_of_time):
            scores[epoch] = validate(model)
            log.info("sasrec epoch %d: valid %.4f", epoch, scores[epoch])
            if scores[epoch] > best:
                best, best_epoch, stale = scores[epoch], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    break
        if out_of_time:
            log.warning("sasrec: time budget spent after %d epochs", epoch)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        done = best_epoch
    model.eval()
    return model, done, scores
