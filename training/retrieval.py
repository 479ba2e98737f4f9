"""Retrieval models from implicit feedback, evaluated on one split and shipped as bundles.

Every model ends as two float32 tables scored by inner product, which is what the engine's
retrieval bundle serves: MF-BPR and implicit ALS as latent factors, EASE and item-kNN as
"user = the user's history row, item = the item's column of the item-item weight matrix"
(score = sum over the user's items of their weight towards the candidate), time-aware
popularity as one column every user weighs 1, and blends as concatenated tables. The dense
item-item models are shipped only for catalogues up to :data:`DENSE_MAX_ITEMS` items (and
users x items up to :data:`DENSE_MAX_CELLS`): their tables grow with the catalogue squared.

Protocol: each candidate's few parameters (trending's half-life, EASE's lambda and the
half-life of its co-occurrences, blend weights) are tuned on the valid part (fitted on
train), then it is refitted on train + valid and scored on test. Valid is scored exactly as
test, one period earlier: users with history before the part and new positives in it, top-K
over the items they have not consumed. The best candidate on valid Recall@K ships as
``retrieval`` unless a simpler one (:data:`SIMPLER_FIRST`) is shown equivalent to it (its
deficit, at the 95% paired bootstrap bound over the valid users, within
:data:`EQUIVALENCE_MARGIN` of the best); the others ship as ``retrieval-<model>``.
Baselines (all-time, trailing-window and decayed popularity, item-kNN) are tuned and scored
the same way but never shipped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from kernels import topk
from kernels.bundle_manifest import (
    RETRIEVAL_FILES,
    SEQUENCE_FILES,
    Graph,
    Ivf,
    RetrievalBundle,
    Sequence,
    Tensor,
    TowerIO,
)
from training import metrics
from training.bundle import write_bundle, write_metrics_json
from training.export import export_onnx, parity_max_abs_error
from training.fit import FitConfig, fit_bpr, fit_ease, fit_ials, fit_item_knn
from training.ivf_bundle import ivf_lists_for, write_ivf
from training.models.mf import EmbeddingScorer, MatrixFactorization
from training.models.sequence import SASRec
from training.sequence import (
    SequenceConfig,
    Sequences,
    fit_sasrec,
    left_padded,
    user_vectors,
)
from training.trending import DAY_S, decay_weights, decayed_scores, time_scales, window_scores

log = logging.getLogger(__name__)

# Dense item-item models (EASE, item-kNN) ship [n_items, n_items] and [n_users, n_items] tables.
DENSE_MAX_ITEMS = 10_000
DENSE_MAX_CELLS = 100_000_000
RETRIEVAL_MODELS: tuple[str, ...] = (
    "trending",
    "mf",
    "ials",
    "ease",
    "ease_ials",
    "trending_ease",
    "sasrec",
)
# Weights of a blend's second model (after matching score spreads), tuned on valid.
BLEND_WEIGHTS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
RETRIEVAL_BASELINES: tuple[str, ...] = (
    "popularity",
    "popularity_window",
    "popularity_decay",
    "item_knn",
)


@dataclass(frozen=True)
class RetrievalConfig:
    """Which retrieval models to train and their hyper-parameters."""

    models: tuple[str, ...] = RETRIEVAL_MODELS
    k: int = 20
    mf_dim: int = 64
    mf_epochs: int = 30
    mf_lr: float = 0.005
    mf_reg: float = 1e-4
    mf_batch_size: int = 1024
    ials_dim: int = 64
    ials_reg: float = 1.0
    ials_alpha: float = 5.0
    ials_iterations: int = 15
    ease_lambdas: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
    # Tune a half-life for the interactions of EASE, iALS and item-kNN on valid (recent pairs
    # weigh more).
    time_decay: bool = True
    bootstrap: int = 1000
    knn_neighbours: int = 100
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    # Wall-clock budget of the sequence model: its epoch search on valid gets at most
    # SEQUENCE_TUNE_SHARE of it, the refit on train + valid (the epochs found) the rest,
    # stopping early when that is spent; None: no limit.
    sequence_minutes: float | None = 3.0
    # IVF index for approximate serving: this many lists (None: ~4 sqrt(n_items) once the
    # catalogue has at least ivf_min_items items; 0: never).
    ivf_lists: int | None = None
    ivf_min_items: int = 50_000
    seed: int = 0
    progress: bool = True


@dataclass
class Interactions:
    """Positive (user row, item row) pairs per split part, and the id tables."""

    users: pl.DataFrame  # user_id, row
    items: pl.DataFrame  # item_id, row
    parts: dict[str, tuple[np.ndarray, np.ndarray]]  # "train" | "valid" | "test" -> (u, i)
    # Per part, each pair's (first) time in seconds since the epoch, aligned with ``parts``;
    # empty when the positives carry no time.
    times: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_items(self) -> int:
        return self.items.height

    def pairs(self, *names: str) -> tuple[np.ndarray, np.ndarray]:
        u = np.concatenate([self.parts[n][0] for n in names])
        i = np.concatenate([self.parts[n][1] for n in names])
        return u, i

    def pair_times(self, *names: str) -> np.ndarray:
        """The times of :meth:`pairs` of the same parts (seconds since the epoch)."""
        if not self.times:
            raise ValueError("these positives carry no time (no 'ts' column)")
        return np.concatenate([self.times[n] for n in names])

    @property
    def timed(self) -> bool:
        return bool(self.times)


@dataclass
class Fitted:
    """A retrieval model as inner-product tables (score(u, i) = <user[u], item[i]>)."""

    user: np.ndarray
    item: np.ndarray
    latent_dim: int
    info: dict[str, Any] = field(default_factory=dict)
    # Leading user columns that are the user's history row (EASE, item-kNN): the bundle fills
    # them from all history, so serving scores with everything the user has consumed.
    history_columns: int = 0
    # The sequence model's user tower: the bundle recomputes the user rows on all history and
    # ships the tower, which the engine runs on the user's recent items at request time.
    tower: SASRec | None = None


def interactions(positives: pl.DataFrame, catalogue: pl.Series | None = None) -> Interactions:
    """Index a labelled positives frame (user_id, item_id, split) into rows."""
    user_ids = positives["user_id"].unique().sort()
    items = positives["item_id"]
    if catalogue is not None:
        items = pl.concat([items, catalogue])
    item_ids = items.unique().sort()
    users = pl.DataFrame({"user_id": user_ids, "row": np.arange(len(user_ids), dtype=np.int64)})
    item_table = pl.DataFrame(
        {"item_id": item_ids, "row": np.arange(len(item_ids), dtype=np.int64)}
    )
    indexed = positives.join(users.rename({"row": "u"}), on="user_id").join(
        item_table.rename({"row": "i"}), on="item_id"
    )
    parts, times = {}, {}
    timed = "ts" in positives.columns
    for name in ("train", "valid", "test"):
        part = indexed.filter(pl.col("split") == name)
        parts[name] = (part["u"].to_numpy().astype(np.int64), part["i"].to_numpy().astype(np.int64))
        if timed:
            times[name] = part["ts"].dt.epoch("us").to_numpy().astype(np.float64) / 1e6
    return Interactions(users, item_table, parts, times)


def csr_from_pairs(
    rows: np.ndarray, cols: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) grouping ``cols`` by ``rows`` (sorted within a row)."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols[order].astype(np.int64)


@dataclass(frozen=True)
class EvalTask:
    """Who is evaluated on which held-out items, skipping which already-seen items."""

    users: np.ndarray
    relevant: metrics.Relevance
    exclude: tuple[np.ndarray, np.ndarray]
    n_items: int


def eval_task(data: Interactions, seen: tuple[str, ...], held_out: str) -> EvalTask:
    """Users with history in ``seen`` and new positives in ``held_out``."""
    su, si = data.pairs(*seen)
    hu, hi = data.parts[held_out]
    seen_indptr, seen_items = csr_from_pairs(su, si, data.n_users)
    seen_keys = su * data.n_items + si
    new = ~np.isin(hu * data.n_items + hi, seen_keys)
    hu, hi = hu[new], hi[new]
    has_history = np.diff(seen_indptr) > 0
    users = np.unique(hu[has_history[hu]])
    truth_indptr, truth = csr_from_pairs(hu, hi, data.n_users)
    relevant = metrics.Relevance.from_lists(
        [truth[truth_indptr[u] : truth_indptr[u + 1]] for u in users]
    )
    counts = np.diff(seen_indptr)[users]
    exclude = (
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.concatenate([seen_items[seen_indptr[u] : seen_indptr[u + 1]] for u in users])
        if len(users)
        else np.zeros(0, dtype=np.int64),
    )
    return EvalTask(users, relevant, exclude, data.n_items)


def evaluate(model: Fitted, task: EvalTask, k: int) -> dict[str, float]:
    """recall@k, ndcg@10, hitrate@10 and coverage of the model's top k on the task."""
    if not len(task.users):
        return {}
    queries = np.ascontiguousarray(model.user[task.users], dtype=np.float32)
    ids, _ = topk(
        queries, np.ascontiguousarray(model.item, dtype=np.float32), k, exclude=task.exclude
    )
    return metrics.evaluate_ranking(
        ids, task.relevant, [f"recall@{k}", "ndcg@10", "hitrate@10", "coverage"], task.n_items
    )


# ---------------------------------------------------------------------------------- models


def _history(data: Interactions, u: np.ndarray, i: np.ndarray) -> np.ndarray:
    x = np.zeros((data.n_users, data.n_items), dtype=np.float32)
    x[u, i] = 1.0
    return x


def popularity(data: Interactions, u: np.ndarray, i: np.ndarray, config: RetrievalConfig) -> Fitted:
    counts = np.bincount(i, minlength=data.n_items).astype(np.float32)
    return Fitted(np.ones((data.n_users, 1), np.float32), counts[:, None], 1)


def item_knn(
    data: Interactions,
    u: np.ndarray,
    i: np.ndarray,
    config: RetrievalConfig,
    weights: np.ndarray | None = None,
    half_life_days: float | None = None,
) -> Fitted:
    """Item-kNN; with ``weights`` (each pair's decay, half-life ``half_life_days``) the
    co-occurrences behind the cosine weigh recent pairs more (user rows stay binary, as
    EASE's)."""
    sim = fit_item_knn(u, i, data.n_users, data.n_items, config.knn_neighbours, weights)
    info: dict[str, Any] = {"neighbours": config.knn_neighbours}
    if half_life_days:
        info["half_life_days"] = half_life_days
    return Fitted(_history(data, u, i), sim.T.astype(np.float32), data.n_items, info, data.n_items)


def mf_bpr(data: Interactions, u: np.ndarray, i: np.ndarray, config: RetrievalConfig) -> Fitted:
    torch.manual_seed(config.seed)
    model = MatrixFactorization(data.n_users, data.n_items, config.mf_dim)
    fit = FitConfig(
        epochs=config.mf_epochs,
        lr=config.mf_lr,
        batch_size=config.mf_batch_size,
        seed=config.seed,
        progress=config.progress,
    )
    fit_bpr(model, u, i, data.n_items, fit, reg=config.mf_reg)
    user, item = (t.numpy().astype(np.float32) for t in model.export_embeddings())
    info = {"dim": config.mf_dim, "epochs": config.mf_epochs, "lr": config.mf_lr}
    # The last column carries the item bias (user side 1), not a latent factor.
    return Fitted(user, item, config.mf_dim, info)


def ials(
    data: Interactions,
    u: np.ndarray,
    i: np.ndarray,
    config: RetrievalConfig,
    weights: np.ndarray | None = None,
    half_life_days: float | None = None,
) -> Fitted:
    """iALS; with ``weights`` (each pair's decay, half-life ``half_life_days``) recent pairs
    get more confidence."""
    user, item = fit_ials(
        u,
        i,
        data.n_users,
        data.n_items,
        dim=config.ials_dim,
        reg=config.ials_reg,
        alpha=config.ials_alpha,
        iterations=config.ials_iterations,
        seed=config.seed,
        progress=config.progress,
        weights=weights,
    )
    info: dict[str, Any] = {
        "dim": config.ials_dim,
        "reg": config.ials_reg,
        "alpha": config.ials_alpha,
    }
    if half_life_days:
        info["half_life_days"] = half_life_days
    return Fitted(user.astype(np.float32), item.astype(np.float32), config.ials_dim, info)


def ease(
    data: Interactions,
    u: np.ndarray,
    i: np.ndarray,
    config: RetrievalConfig,
    reg: float,
    weights: np.ndarray | None = None,
    half_life_days: float | None = None,
) -> Fitted:
    """EASE with lambda ``reg``; with ``weights`` (the decay of each pair, half-life
    ``half_life_days``) the item-item fit weighs recent co-occurrences more. The user rows stay
    binary: on ML-100K and Online Retail decaying them too lost recall (the user's older
    items still say what they like)."""
    b = fit_ease(u, i, data.n_users, data.n_items, reg, weights)
    info: dict[str, Any] = {"lambda": reg}
    if half_life_days:
        info["half_life_days"] = half_life_days
    return Fitted(_history(data, u, i), b.T.astype(np.float32), data.n_items, info, data.n_items)


def blend(first: Fitted, second: Fitted, weight: float, sample: np.ndarray) -> Fitted:
    """score = first + weight * scale * second as one inner product over concatenated tables,
    ``scale`` matching the second model's score spread to the first's on ``sample`` users."""
    spread = [float(np.std(m.user[sample] @ m.item.T)) or 1.0 for m in (first, second)]
    w = weight * spread[0] / spread[1]
    return Fitted(
        np.hstack([first.user, w * second.user]),
        np.hstack([first.item, second.item]),
        first.latent_dim,
        {"first": first.info, "second": second.info, "weight": weight, "scale": w},
        first.history_columns,
    )


Fit = Callable[[Interactions, np.ndarray, np.ndarray, RetrievalConfig], Fitted]
FITS: dict[str, Fit] = {
    "popularity": popularity,
    "item_knn": item_knn,
    "mf": mf_bpr,
    "ials": ials,
}
DENSE = ("ease", "item_knn", "ease_ials", "trending_ease")


def dense_fits(data: Interactions) -> bool:
    return data.n_items <= DENSE_MAX_ITEMS and data.n_users * data.n_items <= DENSE_MAX_CELLS


# ------------------------------------------------------------------------------- training

ALL_PARTS = ("train", "valid", "test")
# Candidates that read each user's positives in time order (they need a "ts" column).
SEQUENTIAL = ("sasrec",)
# Candidates in order of preference when their valid Recall@K is within noise of the best:
# fewer moving parts and smaller tables first (a popularity table, then latent factors, then
# the item x item models, then blends of two models).
# The share of sequence_minutes the epoch search may spend; the refit gets what it leaves.
SEQUENCE_TUNE_SHARE = 0.5
SIMPLER_FIRST: tuple[str, ...] = (
    "trending",
    "ials",
    "mf",
    "ease",
    "trending_ease",
    "ease_ials",
    "sasrec",
)
# Blends: (first, second) models, the second added with a weight tuned on valid (the first's
# leading columns are the bundle's latent part: similar items and audiences use them).
BLENDS: dict[str, tuple[str, str]] = {
    "ease_ials": ("ease", "ials"),
    "trending_ease": ("ease", "popularity_decay"),
    # Decayed popularity, with iALS at a thousandth of its weight: every user gets the same
    # ranking (iALS only breaks ties), while the engine's similar items and audiences, which
    # read the latent columns, stay meaningful instead of ranking a single column.
    "trending": ("ials", "popularity_decay"),
}
TRENDING_DOMINANCE = 1000.0
# Half-lives tried for EASE's co-occurrences and iALS's confidences, as shares of the
# training span (iALS fits cost more: fewer).
EASE_DECAY_SHARES: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0)
IALS_DECAY_SHARES: tuple[float, ...] = (1 / 4, 1.0)
# Time-aware popularity is state, not a fit: a bundle counts every event up to the end of the
# log, as its consumed lists and popularity do (its half-life / window were tuned on valid).
COUNTED_TO_THE_END = ("popularity", "popularity_window", "popularity_decay")


@dataclass
class Scored:
    """Metrics on one evaluation task, and Recall@K per evaluated user (task order)."""

    metrics: dict[str, float]
    recall: np.ndarray


@dataclass
class Entry:
    """One candidate or baseline: its tuned parameters and what it scored on valid and test."""

    name: str
    role: str  # "candidate" | "baseline" | "part" (of a blend, not configured on its own)
    params: dict[str, Any]
    tried: dict[str, float]  # valid Recall@K per setting tried while tuning
    valid: Scored | None
    test: Scored


@dataclass
class RetrievalResult:
    """Test metrics of every model and baseline, the model chosen, and its bundles."""

    models: dict[str, dict[str, float]]
    baselines: dict[str, dict[str, float]]
    valid: dict[str, dict[str, float]]
    best: str | None
    bundles: dict[str, Path]
    # Every candidate and baseline with parameters, valid/test metrics and intervals.
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""


def score(model: Fitted, task: EvalTask, k: int) -> Scored:
    """:func:`evaluate` plus the per-user Recall@K a bootstrap resamples."""
    if not len(task.users):
        return Scored({}, np.zeros(0))
    queries = np.ascontiguousarray(model.user[task.users], dtype=np.float32)
    ids, _ = topk(
        queries, np.ascontiguousarray(model.item, dtype=np.float32), k, exclude=task.exclude
    )
    found = metrics.evaluate_ranking(
        ids, task.relevant, [f"recall@{k}", "ndcg@10", "hitrate@10", "coverage"], task.n_items
    )
    return Scored(found, metrics.recall_per_user(ids, task.relevant, k))


class RetrievalRun:
    """Fits, tunes and scores the retrieval models of one split, caching every fit."""

    def __init__(self, data: Interactions, config: RetrievalConfig) -> None:
        self.data, self.config = data, config
        self.valid_task = eval_task(data, ("train",), "valid")
        self.test_task = eval_task(data, ("train", "valid"), "test")
        users = self.valid_task.users if len(self.valid_task.users) else self.test_task.users
        self.sample = users[:500]
        self._fits: dict[tuple[str, tuple[str, ...], str], Fitted] = {}
        # Seconds of sequence_minutes the epoch search left to the refit (None: no limit).
        self._sequence_left: float | None = None
        if data.timed:
            t = data.pair_times("train")
            span_days = float(t.max() - t.min()) / DAY_S if t.size else 0.0
            self.scales = time_scales(span_days)
            self.ease_half_lives = _shares(span_days, EASE_DECAY_SHARES)
            self.ials_half_lives = _shares(span_days, IALS_DECAY_SHARES)
        else:
            self.scales, self.ease_half_lives, self.ials_half_lives = (), (), ()

    @property
    def key(self) -> str:
        return f"recall@{self.config.k}"

    def now(self, parts: tuple[str, ...]) -> float:
        t = self.data.pair_times(*parts)
        return float(t.max()) if t.size else 0.0

    def fit(self, name: str, parts: tuple[str, ...], params: dict[str, Any]) -> Fitted:
        """``name`` with ``params`` fitted on ``parts`` (cached)."""
        cache = (name, parts, repr(sorted(params.items())))
        if cache not in self._fits:
            self._fits[cache] = self._fit(name, parts, params)
        return self._fits[cache]

    def _fit(self, name: str, parts: tuple[str, ...], params: dict[str, Any]) -> Fitted:
        data, config = self.data, self.config
        if name in BLENDS:
            first, second = BLENDS[name]
            return _blend(
                name,
                self.fit(first, parts, params[first]),
                self.fit(second, parts, params[second]),
                params["weight"],
                self.sample,
            )
        u, i = data.pairs(*parts)
        if name in ("popularity_window", "popularity_decay"):
            t, now = data.pair_times(*parts), self.now(parts)
            if name == "popularity_decay":
                table = decayed_scores(i, t, data.n_items, now, params["half_life_days"])
            else:
                table = window_scores(i, t, data.n_items, now, params["window_days"])
            # Scaled to a top score of 1: the ranking is the same, and float32 scores keep
            # the ONNX parity check's absolute tolerance whatever the log's volume.
            table = table / (table.max(initial=0.0) or 1.0)
            ones = np.ones((data.n_users, 1), np.float32)
            return Fitted(ones, table.astype(np.float32)[:, None], 1, dict(params))
        if name == "sasrec":
            left = self._sequence_left
            model, _, _ = fit_sasrec(
                self.sequences(parts),
                data.n_items,
                config.sequence,
                epochs=params["epochs"],
                deadline=None if left is None else time.monotonic() + left,
            )
            return self.sasrec_tables(model, parts)
        if name in ("ease", "ials", "item_knn"):
            half_life = params.get("half_life_days")
            weights = (
                decay_weights(data.pair_times(*parts), self.now(parts), half_life)
                if half_life
                else None
            )
            if name == "ials":
                return ials(data, u, i, config, weights, half_life)
            if name == "item_knn":
                return item_knn(data, u, i, config, weights, half_life)
            return ease(data, u, i, config, params["lambda"], weights, half_life)
        return FITS[name](data, u, i, config)

    def sequences(self, parts: tuple[str, ...]) -> Sequences:
        u, i = self.data.pairs(*parts)
        return Sequences.of(u, i, self.data.pair_times(*parts), self.data.n_users)

    def sasrec_tables(self, model: SASRec, parts: tuple[str, ...]) -> Fitted:
        """The tower on each user's items of ``parts`` against the item embeddings."""
        item = model.item_table().detach().numpy().astype(np.float32)
        user = user_vectors(model, self.sequences(parts))
        info = {"dim": self.config.sequence.dim, "max_len": model.max_len}
        return Fitted(user, item, item.shape[1], info, tower=model)

    def tune_sasrec(self) -> tuple[dict[str, Any], dict[str, float]]:
        """The epochs with the best valid Recall@K (scored every few epochs, early stopped,
        within ``sequence_minutes``); that fit is cached as the one on train."""
        config = self.config
        if not len(self.valid_task.users):
            return {"epochs": config.sequence.eval_every}, {}
        minutes = config.sequence_minutes
        start = time.monotonic()
        deadline = start + 60.0 * minutes * SEQUENCE_TUNE_SHARE if minutes is not None else None

        def validate(model: SASRec) -> float:
            fitted = self.sasrec_tables(model, ("train",))
            return score(fitted, self.valid_task, config.k).metrics.get(self.key, 0.0)

        model, epochs, scores = fit_sasrec(
            self.sequences(("train",)),
            self.data.n_items,
            config.sequence,
            validate=validate,
            deadline=deadline,
        )
        if minutes is not None:
            self._sequence_left = max(0.0, 60.0 * minutes - (time.monotonic() - start))
        params = {"epochs": epochs}
        self._fits[("sasrec", ("train",), repr(sorted(params.items())))] = self.sasrec_tables(
            model, ("train",)
        )
        return params, {f"epochs={e}": s for e, s in scores.items()}

    def valid_recall(self, name: str, params: dict[str, Any]) -> float:
        fitted = self.fit(name, ("train",), params)
        return score(fitted, self.valid_task, self.config.k).metrics.get(self.key, 0.0)

    def grid(
        self, name: str, settings: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """The setting with the best valid Recall@K (the first of equals), and every score."""
        if not len(self.valid_task.users) or len(settings) == 1:
            return settings[0], {}
        tried = {_label(s): self.valid_recall(name, s) for s in settings}
        best = max(settings, key=lambda s: tried[_label(s)])
        return best, tried

    def tune(
        self, name: str, tuned: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Parameters of ``name`` tuned on valid (blends reuse their parts' ``tuned`` ones)."""
        config = self.config
        if name == "popularity_decay":
            # None: no decay, i.e. all-time popularity, for logs whose tastes do not drift.
            # Longest first, so that equal scores keep the smoother choice.
            scales = (None, *self.scales[::-1])
            return self.grid(name, [{"half_life_days": h} for h in scales])
        if name == "popularity_window":
            return self.grid(name, [{"window_days": w} for w in self.scales[::-1]])
        if name == "ease":
            best, tried = self.grid(name, [{"lambda": r} for r in config.ease_lambdas])
            if not config.time_decay or not self.scales:
                return best, tried
            # Then the half-life of the co-occurrences' weights at that lambda (or no decay):
            # tastes drift over months, so long half-lives only.
            decayed = [{**best, "half_life_days": h} for h in self.ease_half_lives]
            best, more = self.grid(name, [best, *decayed])
            return best, {**tried, **more}
        if name == "sasrec":
            return self.tune_sasrec()
        if name == "item_knn" and config.time_decay and self.scales:
            # The cosine's co-occurrences decay as EASE's do (same half-lives, or none).
            return self.grid(name, [{}, *({"half_life_days": h} for h in self.ease_half_lives)])
        if name == "ials" and config.time_decay and self.scales:
            # Each fit costs seconds to minutes: the plain one and two long half-lives.
            return self.grid(name, [{}, *({"half_life_days": h} for h in self.ials_half_lives)])
        if name in BLENDS:
            first, second = BLENDS[name]
            base = {first: tuned[first], second: tuned[second]}
            weights = (TRENDING_DOMINANCE,) if name == "trending" else BLEND_WEIGHTS
            return self.grid(name, [{**base, "weight": w} for w in weights])
        return {}, {}


def _shares(span_days: float, shares: tuple[float, ...]) -> tuple[float, ...]:
    """``shares`` of the span in days, two significant digits (none for an empty span)."""
    return tuple(float(f"{s * span_days:.2g}") for s in shares) if span_days > 0 else ()


def _label(setting: dict[str, Any]) -> str:
    """A short, stable name for a tuning setting (blend parts left out)."""
    flat = {k: v for k, v in setting.items() if not isinstance(v, dict)}
    return (
        ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())
        or "default"
    )


# A simpler candidate ships instead of the best on valid only when it is shown equivalent:
# the upper end of the one-sided 95% bootstrap interval of its deficit (paired, over valid
# users) is at most this share of the best's metric. The one-standard-error rule took "not
# distinguishable" for "as good": on Online Retail it shipped `ease` 0.6 standard errors
# behind `trending_ease` on valid, which then led it on test by 10%.
EQUIVALENCE_MARGIN = 0.02


def choose(entries: dict[str, Entry], key: str, seed: int = 0) -> tuple[str, str]:
    """The candidate to ship and why: the best valid ``key``, unless a simpler candidate
    (:data:`SIMPLER_FIRST`) is equivalent to it on valid: its paired deficit over the valid
    users is, at the 95% bootstrap bound, within :data:`EQUIVALENCE_MARGIN` of the best's
    ``key`` (a non-inferiority test; a deficit merely within noise is not enough)."""
    valid = {n: e.valid for n, e in entries.items() if e.valid is not None and e.valid.recall.size}
    if not valid:
        return min(entries, key=_simplicity), "no validation users: the simplest candidate"
    best = max(valid, key=lambda n: (valid[n].metrics[key], -_simplicity(n)))
    top = valid[best]
    margin = EQUIVALENCE_MARGIN * top.metrics[key]
    simpler = sorted((n for n in valid if _simplicity(n) < _simplicity(best)), key=_simplicity)
    for name in simpler:
        diff = top.recall - valid[name].recall
        bound = float(np.quantile(metrics.bootstrap_means(diff, seed=seed), 0.95))
        if bound <= margin:
            return name, (
                f"the simplest candidate equivalent to the best on valid: {key} "
                f"{valid[name].metrics[key]:.4f} vs {top.metrics[key]:.4f} for `{best}`, "
                f"its deficit at most {bound:.4f} (95% paired bootstrap bound over valid "
                f"users) within the margin {margin:.4f} ({EQUIVALENCE_MARGIN:.0%} of the best)"
            )
    if len(valid) == 1:
        return best, f"the only candidate scored on valid ({key} {top.metrics[key]:.4f})"
    return best, (
        f"the best valid {key} ({top.metrics[key]:.4f})"
        + (
            ", no simpler candidate shown equivalent to it (95% paired bootstrap bound of "
            f"the deficit within {EQUIVALENCE_MARGIN:.0%} of the best)"
            if simpler
            else ", and the simplest"
        )
    )


def _simplicity(name: str) -> int:
    return SIMPLER_FIRST.index(name) if name in SIMPLER_FIRST else len(SIMPLER_FIRST)


def train_retrieval(
    data: Interactions,
    out: Path | None,
    config: RetrievalConfig,
    split_spec: dict[str, Any],
    item_attributes: pl.DataFrame | None = None,
) -> RetrievalResult:
    """Tune, fit, evaluate and ship every configured retrieval model (see the module
    docstring); ``out=None`` evaluates without writing bundles (the benchmark)."""
    run = RetrievalRun(data, config)
    valid_task, test_task, k, key = run.valid_task, run.test_task, config.k, run.key
    log.info(
        "retrieval: %d users, %d items; %d valid users, %d test users",
        data.n_users,
        data.n_items,
        len(valid_task.users),
        len(test_task.users),
    )
    if not len(test_task.users):
        # E.g. an ad log keyed by request: nobody has history to retrieve from.
        log.warning(
            "skipping the retrieval models: they need at least one user with positives both "
            "before the test part and new ones in it; this log has none"
        )
        return RetrievalResult({}, {}, {}, None, {})

    def usable(name: str) -> bool:
        parts = BLENDS.get(name, (name,))
        if any(p in DENSE for p in parts) and not dense_fits(data):
            return False
        if any(p in SEQUENTIAL for p in parts) and (
            not data.timed or data.n_items > config.sequence.max_items
        ):
            return False
        return data.timed or not any(p in COUNTED_TO_THE_END[1:] for p in parts)

    names = [m for m in config.models if usable(m)]
    skipped = [m for m in config.models if m not in names]
    if skipped:
        log.warning(
            "skipping %s: catalogue too large for dense item-item models (over %d items) or the "
            "sequence model (over %d), or no times",
            skipped,
            DENSE_MAX_ITEMS,
            config.sequence.max_items,
        )
    baselines = [b for b in RETRIEVAL_BASELINES if usable(b)]
    # Parts of blends are tuned first (and scored, but only configured ones are candidates).
    order = list(dict.fromkeys([p for n in names for p in BLENDS.get(n, ())] + names + baselines))
    tuned: dict[str, dict[str, Any]] = {}
    entries: dict[str, Entry] = {}
    for name in order:
        params, tried = run.tune(name, tuned)
        tuned[name] = params
        if tried:
            log.info("retrieval %s: %s (valid %s by setting: %s)", name, _label(params), key, tried)
        valid = (
            score(run.fit(name, ("train",), params), valid_task, k)
            if len(valid_task.users)
            else None
        )
        test = score(run.fit(name, ("train", "valid"), params), test_task, k)
        role = "candidate" if name in names else "baseline" if name in baselines else "part"
        entries[name] = Entry(name, role, params, tried, valid, test)
        log.info("retrieval %s: test %s", name, test.metrics)
    candidates = {n: entries[n] for n in names}
    best, why = choose(candidates, key, config.seed) if names else (None, "")
    if best is not None:
        log.info("retrieval: shipping %s: %s", best, why)
    # Cold start serves the better on valid of all-time and time-aware popularity.
    cold = _cold_start(run, entries, tuned)
    bundles = {}
    for name in names if out is not None else ():
        bundle = "retrieval" if name == best else f"retrieval-{name}"
        entry = entries[name]
        bundles[name] = write_retrieval_bundle(
            out,  # type: ignore[arg-type]
            bundle,
            name,
            _served(run, name, tuned[name]),
            data,
            entry.test.metrics,
            entry.valid.metrics if entry.valid else {},
            split_spec,
            config,
            item_attributes,
            cold,
        )
    return RetrievalResult(
        models={n: entries[n].test.metrics for n in names},
        baselines={n: entries[n].test.metrics for n in baselines},
        valid={n: entries[n].valid.metrics for n in names if entries[n].valid},
        best=best,
        bundles=bundles,
        leaderboard=[
            leaderboard_row(entries[n], key, n == best, config.seed) for n in [*names, *baselines]
        ],
        why=why,
    )


def _blend(name: str, first: Fitted, second: Fitted, weight: float, sample: np.ndarray) -> Fitted:
    """:func:`blend`; for ``trending``, rescaled so the popularity part scores as it is (the
    same ranking, with scores near 1 rather than the thousands its dominance would give)."""
    fitted = blend(first, second, weight, sample)
    if name == "trending":
        fitted.user = fitted.user / np.float32(fitted.info["scale"])
    return fitted


def _served(run: RetrievalRun, name: str, params: dict[str, Any]) -> Fitted:
    """The tables a bundle serves: fitted on train + valid, with the time-aware popularity
    parts counted to the end of the log (see :data:`COUNTED_TO_THE_END`)."""
    if name not in BLENDS:
        return run.fit(
            name, ALL_PARTS if name in COUNTED_TO_THE_END else ("train", "valid"), params
        )
    first, second = BLENDS[name]
    parts = {
        p: (ALL_PARTS if p in COUNTED_TO_THE_END else ("train", "valid")) for p in (first, second)
    }
    return _blend(
        name,
        run.fit(first, parts[first], params[first]),
        run.fit(second, parts[second], params[second]),
        params["weight"],
        run.sample,
    )


def _cold_start(
    run: RetrievalRun, entries: dict[str, Entry], tuned: dict[str, dict[str, Any]]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Item scores for users the model does not know, and what they are."""
    _, i_all = run.data.pairs(*ALL_PARTS)
    counts = np.bincount(i_all, minlength=run.data.n_items).astype(np.float32)
    about: dict[str, Any] = {"kind": "popularity", "rule": "positives per item, all parts"}
    trend, pop = entries.get("popularity_decay"), entries.get("popularity")
    if trend is None or pop is None or trend.valid is None or pop.valid is None:
        return counts, about
    if trend.valid.metrics.get(run.key, 0.0) > pop.valid.metrics.get(run.key, 0.0):
        table = run.fit("popularity_decay", ALL_PARTS, tuned["popularity_decay"]).item[:, 0]
        about = {
            "kind": "trending",
            **tuned["popularity_decay"],
            "rule": "decayed positives per item as of the end of the log (beat all-time popularity on valid)",
        }
        return np.ascontiguousarray(table, dtype=np.float32), about
    return counts, about


def leaderboard_row(entry: Entry, key: str, shipped: bool, seed: int) -> dict[str, Any]:
    """A JSON row: parameters, valid/test metrics, 95% bootstrap intervals of ``key``."""
    row: dict[str, Any] = {
        "name": entry.name,
        "role": entry.role,
        "params": json.loads(json.dumps(entry.params, default=str)),
        "tried": entry.tried,
        "shipped": shipped,
    }
    for part, scored in (("valid", entry.valid), ("test", entry.test)):
        if scored is None or not scored.recall.size:
            row[part] = None
            continue
        lo, hi = metrics.bootstrap_interval(scored.recall, seed=seed)
        row[part] = {**scored.metrics, f"{key}_ci": [lo, hi], "users": int(scored.recall.size)}
    return row


def write_retrieval_bundle(
    out: Path,
    bundle: str,
    model_type: str,
    model: Fitted,
    data: Interactions,
    test_metrics: dict[str, float],
    valid_metrics: dict[str, float],
    split_spec: dict[str, Any],
    config: RetrievalConfig,
    item_attributes: pl.DataFrame | None,
    cold_start: tuple[np.ndarray, dict[str, Any]] | None = None,
) -> Path:
    """A ``retrieval`` bundle: ONNX scorer, embeddings, consumed lists, popularity, id tables.

    Serving artefacts reflect all history: consumed items, popularity and (for the
    history-row models) the user rows include the test part."""
    u_all, i_all = data.pairs("train", "valid", "test")
    indptr, consumed = csr_from_pairs(u_all, i_all, data.n_users)
    if cold_start is None:
        counts = np.bincount(i_all, minlength=data.n_items).astype(np.float32)
        cold_start = (counts, {"kind": "popularity", "rule": "positives per item, all parts"})
    all_popularity, cold_start_about = cold_start
    user = np.array(model.user, dtype=np.float32)
    if model.history_columns:
        user[:, : model.history_columns] = _history(data, u_all, i_all)
    recent = None
    if model.tower is not None:
        # Served rows: the tower on every user's latest items, test part included.
        seqs = Sequences.of(u_all, i_all, data.pair_times(*ALL_PARTS), data.n_users)
        user = user_vectors(model.tower, seqs)
        recent = seqs.recent(model.tower.max_len)
    item = np.ascontiguousarray(model.item, dtype=np.float32)
    item_table = data.items
    if item_attributes is not None:
        attrs = [c for c in ("category", "price") if c in item_attributes.columns]
        item_table = item_table.join(
            item_attributes.select("item_id", *attrs), on="item_id", how="left"
        )
    scorer = EmbeddingScorer(user, item)
    manifest = RetrievalBundle(
        model_type=model_type,
        onnx=Graph(
            inputs=[
                Tensor(name="user_index", dtype="int64", shape=[-1]),
                Tensor(name="item_index", dtype="int64", shape=[-1]),
            ],
            outputs=[Tensor(name="score", dtype="float32", shape=[-1])],
        ),
        embedding_dim=int(user.shape[1]),
        # Item-item cosine uses columns [0, latent_dim): MF's last column is the item bias.
        latent_dim=model.latent_dim,
        artifacts={**RETRIEVAL_FILES, **(SEQUENCE_FILES if model.tower is not None else {})},
        metrics=test_metrics,
        valid_metrics=valid_metrics,
        cold_start=cold_start_about,
        split=split_spec,
        train={**asdict(config), **model.info, "positives": int(u_all.size)},
        sequence=sequence_manifest(model.tower, data) if model.tower is not None else None,
    )

    def write(tmp: Path) -> None:
        example = (torch.zeros(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
        export_onnx(scorer, example, ["user_index", "item_index"], "score", tmp / "model.onnx")
        rng = np.random.default_rng(config.seed)
        manifest.parity_max_abs_error = parity_max_abs_error(
            scorer,
            tmp / "model.onnx",
            {
                "user_index": rng.integers(0, data.n_users, 2000).astype(np.int64),
                "item_index": rng.integers(0, data.n_items, 2000).astype(np.int64),
            },
        )
        np.save(tmp / "user_embeddings.npy", user)
        np.save(tmp / "item_embeddings.npy", item)
        np.save(tmp / "consumed_indptr.npy", indptr)
        np.save(tmp / "consumed_indices.npy", consumed)
        np.save(tmp / "popularity.npy", all_popularity)
        data.users.write_parquet(tmp / "users.parquet")
        item_table.write_parquet(tmp / "items.parquet")
        if model.tower is not None and recent is not None:
            write_sequence_artifacts(tmp, model.tower, recent, config.seed)
        n_lists = ivf_lists_for(data.n_items, config.ivf_min_items, config.ivf_lists)
        if n_lists:
            ivf = write_ivf(tmp, item, n_lists, config.seed)
            manifest.ivf = Ivf(**ivf["ivf"])
            manifest.artifacts = {**manifest.artifacts, **ivf["artifacts"]}
        write_metrics_json(tmp, manifest)

    path = write_bundle(out, bundle, manifest, write)
    log.info("retrieval bundle %s (%s)", path, model_type)
    return path


def sequence_manifest(tower: SASRec, data: Interactions) -> Sequence:
    """What the engine needs to run the user tower: the input's length and padding row, and
    the time after which a logged click is newer than the shipped recent items."""
    as_of_ms = int(data.pair_times(*ALL_PARTS).max() * 1000) if data.timed else 0
    return Sequence(
        max_len=tower.max_len,
        pad=tower.pad,
        as_of_ms=as_of_ms,
        events=["click"],
        user_tower=TowerIO(
            inputs=[Tensor(name="items", dtype="int64", shape=[-1, tower.max_len])],
            outputs=[Tensor(name="user", dtype="float32", shape=[-1, tower.dim])],
        ),
    )


def write_sequence_artifacts(
    tmp: Path, tower: SASRec, recent: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    """The user tower as ONNX (parity-checked on the shipped users' own inputs) and each
    user's recent items (time order, newest last)."""
    indptr, items = recent
    rows = [items[indptr[u] : indptr[u + 1]] for u in range(len(indptr) - 1)]
    padded = left_padded(rows, tower.max_len, tower.pad)
    example = (torch.from_numpy(padded[:4]),)
    export_onnx(tower, example, ["items"], "user", tmp / SEQUENCE_FILES["user_tower"])
    pick = np.random.default_rng(seed).permutation(len(padded))[:500]
    parity_max_abs_error(tower, tmp / SEQUENCE_FILES["user_tower"], {"items": padded[pick]})
    np.save(tmp / SEQUENCE_FILES["recent_indptr"], indptr)
    np.save(tmp / SEQUENCE_FILES["recent_indices"], items)
