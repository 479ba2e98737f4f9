"""Retrieval models from implicit feedback, evaluated on one split and shipped as bundles.

Every model ends as two float32 tables scored by inner product, which is what the engine's
retrieval bundle serves: MF-BPR and implicit ALS as latent factors, EASE and item-kNN as
"user = the user's history row, item = the item's column of the item-item weight matrix"
(score = sum over the user's items of their weight towards the candidate). The dense
item-item models are shipped only for catalogues up to :data:`DENSE_MAX_ITEMS` items (and
users x items up to :data:`DENSE_MAX_CELLS`): their tables grow with the catalogue squared.

Protocol: each model is fitted on the train part and scored on valid (EASE's lambda is tuned
there), then refitted on train + valid and scored on test; the best on valid by Recall@K is
shipped as ``retrieval``, the others as ``retrieval-<model>``. Users are evaluated when they
have training history and new (unseen in train/valid) positives in the part scored; the
ranking skips the items they already consumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from kernels import topk
from training import metrics
from training.bundle import write_bundle, write_metrics_json
from training.export import export_onnx, parity_max_abs_error
from training.fit import FitConfig, fit_bpr, fit_ease, fit_ials, fit_item_knn
from training.ivf_bundle import ivf_lists_for, write_ivf
from training.models.mf import EmbeddingScorer, MatrixFactorization

log = logging.getLogger(__name__)

# Dense item-item models (EASE, item-kNN) ship [n_items, n_items] and [n_users, n_items] tables.
DENSE_MAX_ITEMS = 10_000
DENSE_MAX_CELLS = 100_000_000
RETRIEVAL_MODELS: tuple[str, ...] = ("mf", "ials", "ease", "ease_ials")
# Blend weights of iALS added to EASE (after matching score spreads), tuned on valid.
BLEND_WEIGHTS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
RETRIEVAL_BASELINES: tuple[str, ...] = ("popularity", "item_knn")


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
    knn_neighbours: int = 100
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
    parts = {}
    for name in ("train", "valid", "test"):
        part = indexed.filter(pl.col("split") == name)
        parts[name] = (part["u"].to_numpy().astype(np.int64), part["i"].to_numpy().astype(np.int64))
    return Interactions(users, item_table, parts)


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


def item_knn(data: Interactions, u: np.ndarray, i: np.ndarray, config: RetrievalConfig) -> Fitted:
    sim = fit_item_knn(u, i, data.n_users, data.n_items, config.knn_neighbours)
    info = {"neighbours": config.knn_neighbours}
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


def ials(data: Interactions, u: np.ndarray, i: np.ndarray, config: RetrievalConfig) -> Fitted:
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
    )
    info = {"dim": config.ials_dim, "reg": config.ials_reg, "alpha": config.ials_alpha}
    return Fitted(user.astype(np.float32), item.astype(np.float32), config.ials_dim, info)


def ease(
    data: Interactions, u: np.ndarray, i: np.ndarray, config: RetrievalConfig, reg: float
) -> Fitted:
    b = fit_ease(u, i, data.n_users, data.n_items, reg)
    return Fitted(
        _history(data, u, i), b.T.astype(np.float32), data.n_items, {"lambda": reg}, data.n_items
    )


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
DENSE = ("ease", "item_knn", "ease_ials")


def dense_fits(data: Interactions) -> bool:
    return data.n_items <= DENSE_MAX_ITEMS and data.n_users * data.n_items <= DENSE_MAX_CELLS


def tune_ease(
    data: Interactions, config: RetrievalConfig, valid: EvalTask
) -> tuple[float, dict[str, float]]:
    """EASE's lambda by Recall@K on valid (fitted on train); returns it and every score."""
    u, i = data.parts["train"]
    scores = {}
    for reg in config.ease_lambdas:
        scores[str(reg)] = evaluate(ease(data, u, i, config, reg), valid, config.k).get(
            f"recall@{config.k}", 0.0
        )
    best = max(config.ease_lambdas, key=lambda r: scores[str(r)])
    return best, scores


# ------------------------------------------------------------------------------- training


@dataclass
class RetrievalResult:
    """Test metrics of every model and baseline, the model chosen, and its bundles."""

    models: dict[str, dict[str, float]]
    baselines: dict[str, dict[str, float]]
    valid: dict[str, dict[str, float]]
    best: str | None
    bundles: dict[str, Path]


def train_retrieval(
    data: Interactions,
    out: Path | None,
    config: RetrievalConfig,
    split_spec: dict[str, Any],
    item_attributes: pl.DataFrame | None = None,
) -> RetrievalResult:
    """Fit, evaluate and ship every configured retrieval model (see the module docstring);
    ``out=None`` evaluates without writing bundles (the benchmark)."""
    valid_task = eval_task(data, ("train",), "valid")
    test_task = eval_task(data, ("train", "valid"), "test")
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
    names = [m for m in config.models if m not in DENSE or dense_fits(data)]
    skipped = [m for m in config.models if m not in names]
    if skipped:
        log.warning("catalogue too large for dense item-item models: skipping %s", skipped)
    baselines = [b for b in RETRIEVAL_BASELINES if b not in DENSE or dense_fits(data)]
    ease_reg: float | None = None
    ease_scores: dict[str, float] = {}
    if "ease" in names or "ease_ials" in names:
        ease_reg, ease_scores = tune_ease(data, config, valid_task)
        log.info("EASE lambda %s (valid recall@%d by lambda: %s)", ease_reg, config.k, ease_scores)

    def fit(name: str, parts: tuple[str, ...]) -> Fitted:
        u, i = data.pairs(*parts)
        if name == "ease":
            assert ease_reg is not None
            fitted = ease(data, u, i, config, ease_reg)
            fitted.info["valid_recall_by_lambda"] = ease_scores
            return fitted
        return FITS[name](data, u, i, config)

    valid_metrics: dict[str, dict[str, float]] = {}
    test_metrics: dict[str, dict[str, float]] = {}
    finals: dict[str, Fitted] = {}
    on_train: dict[str, Fitted] = {}
    singles = [n for n in names if n != "ease_ials"]
    for name in [*singles, *baselines]:
        # Valid scores pick the shipped model; models only, baselines are not shipped.
        if name in names and len(valid_task.users):
            on_train[name] = fit(name, ("train",))
            valid_metrics[name] = evaluate(on_train[name], valid_task, config.k)
        final = fit(name, ("train", "valid"))
        test_metrics[name] = evaluate(final, test_task, config.k)
        if name in names:
            finals[name] = final
        log.info("retrieval %s: test %s", name, test_metrics[name])
    if "ease_ials" in names:
        # EASE plus iALS: needs both single models, fitted above or here.
        for part, store in ((("train",), on_train), (("train", "valid"), finals)):
            for single in ("ease", "ials"):
                if single not in store:
                    store[single] = fit(single, part)
        sample = valid_task.users[:500] if len(valid_task.users) else test_task.users[:500]
        scores = {
            w: evaluate(blend(on_train["ease"], on_train["ials"], w, sample), valid_task, config.k)
            for w in BLEND_WEIGHTS
        }
        weight = max(BLEND_WEIGHTS, key=lambda w: scores[w].get(f"recall@{config.k}", 0.0))
        valid_metrics["ease_ials"] = scores[weight]
        finals["ease_ials"] = blend(finals["ease"], finals["ials"], weight, sample)
        test_metrics["ease_ials"] = evaluate(finals["ease_ials"], test_task, config.k)
        log.info("retrieval ease_ials (weight %s): test %s", weight, test_metrics["ease_ials"])
    for name in [n for n in finals if n not in names]:
        del finals[name]
    key = f"recall@{config.k}"
    best = max(names, key=lambda n: valid_metrics.get(n, {}).get(key, 0.0)) if names else None
    bundles = {}
    for name in names if out is not None else ():
        bundle = "retrieval" if name == best else f"retrieval-{name}"
        bundles[name] = write_retrieval_bundle(
            out,  # type: ignore[arg-type]
            bundle,
            name,
            finals[name],
            data,
            test_metrics[name],
            valid_metrics.get(name, {}),
            split_spec,
            config,
            item_attributes,
        )
    return RetrievalResult(
        models={n: test_metrics[n] for n in names},
        baselines={n: test_metrics[n] for n in baselines},
        valid=valid_metrics,
        best=best,
        bundles=bundles,
    )


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
) -> Path:
    """A ``retrieval`` bundle: ONNX scorer, embeddings, consumed lists, popularity, id tables.

    Serving artefacts reflect all history: consumed items, popularity and (for the
    history-row models) the user rows include the test part."""
    u_all, i_all = data.pairs("train", "valid", "test")
    indptr, consumed = csr_from_pairs(u_all, i_all, data.n_users)
    all_popularity = np.bincount(i_all, minlength=data.n_items).astype(np.float32)
    user = np.array(model.user, dtype=np.float32)
    if model.history_columns:
        user[:, : model.history_columns] = _history(data, u_all, i_all)
    item = np.ascontiguousarray(model.item, dtype=np.float32)
    item_table = data.items
    if item_attributes is not None:
        attrs = [c for c in ("category", "price") if c in item_attributes.columns]
        item_table = item_table.join(
            item_attributes.select("item_id", *attrs), on="item_id", how="left"
        )
    scorer = EmbeddingScorer(user, item)
    manifest: dict[str, Any] = {
        "model_type": model_type,
        "onnx": {
            "file": "model.onnx",
            "inputs": [
                {"name": "user_index", "dtype": "int64", "shape": [-1]},
                {"name": "item_index", "dtype": "int64", "shape": [-1]},
            ],
            "outputs": [{"name": "score", "dtype": "float32", "shape": [-1]}],
        },
        "embedding_dim": int(user.shape[1]),
        # Item-item cosine uses columns [0, latent_dim): MF's last column is the item bias.
        "latent_dim": model.latent_dim,
        "metric": "ip",
        "artifacts": {
            "user_embeddings": "user_embeddings.npy",
            "item_embeddings": "item_embeddings.npy",
            "consumed_indptr": "consumed_indptr.npy",
            "consumed_indices": "consumed_indices.npy",
            "popularity": "popularity.npy",
            "users": "users.parquet",
            "items": "items.parquet",
            "metrics": "metrics.json",
        },
        "metrics": test_metrics,
        "valid_metrics": valid_metrics,
        "split": split_spec,
        "train": {**asdict(config), **model.info, "positives": int(u_all.size)},
    }

    def write(tmp: Path) -> None:
        example = (torch.zeros(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
        export_onnx(scorer, example, ["user_index", "item_index"], "score", tmp / "model.onnx")
        rng = np.random.default_rng(config.seed)
        manifest["parity_max_abs_error"] = parity_max_abs_error(
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
        n_lists = ivf_lists_for(data.n_items, config.ivf_min_items, config.ivf_lists)
        if n_lists:
            ivf = write_ivf(tmp, item, n_lists, config.seed)
            manifest["ivf"] = ivf["ivf"]
            manifest["artifacts"].update(ivf["artifacts"])
        write_metrics_json(tmp, manifest)

    path = write_bundle(out, bundle, "retrieval", manifest, write)
    log.info("retrieval bundle %s (%s)", path, model_type)
    return path
