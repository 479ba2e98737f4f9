"""`reachrank train`: event log → split → CTR and retrieval models → evaluated ONNX bundles."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from kernels import topk
from kernels.featurize import CategoricalField, FeatureSchema, NumericField
from training import metrics
from training.bundle import write_bundle
from training.examples import ctr_examples, positives
from training.export import export_onnx, parity_max_abs_error
from training.fit import FitConfig, fit_bpr, fit_ctr, fit_platt, predict_logits
from training.models.ctr import CTR_MODELS, CalibratedCTR
from training.models.mf import MatrixFactorization
from training.profiles import RFM_SEGMENT_RULES, kmeans_segments, user_profiles

log = logging.getLogger(__name__)

# Columns of the event log that are never used as context features.
_NOT_CONTEXT = {"user_id", "item_id", "ts", "event", "value", "price", "position", "request_id"}


@dataclass(frozen=True)
class TrainConfig:
    """What `reachrank train` builds and how."""

    ctr_model: str = "fm"
    ctr_epochs: int = 3
    ctr_lr: float = 0.01
    n_buckets: int = 1 << 17
    mf_dim: int = 32
    mf_epochs: int = 20
    mf_lr: float = 0.01
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    k: int = 20
    seed: int = 0
    progress: bool = True


@dataclass
class Dataset:
    """A conformed event log with optional side tables."""

    events: pl.LazyFrame
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None


@dataclass(frozen=True)
class TimeSplit:
    """Global temporal split: train < valid_from <= valid < test_from <= test."""

    valid_from: datetime
    test_from: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "global_time",
            "valid_from": self.valid_from.isoformat(),
            "test_from": self.test_from.isoformat(),
        }

    def label(self) -> pl.Expr:
        return (
            pl.when(pl.col("ts") >= self.test_from)
            .then(pl.lit("test"))
            .when(pl.col("ts") >= self.valid_from)
            .then(pl.lit("valid"))
            .otherwise(pl.lit("train"))
            .alias("split")
        )


def time_split(events: pl.LazyFrame, valid_fraction: float, test_fraction: float) -> TimeSplit:
    q = events.select(
        pl.col("ts").quantile(1.0 - valid_fraction - test_fraction).alias("v"),
        pl.col("ts").quantile(1.0 - test_fraction).alias("t"),
    ).collect()
    return TimeSplit(valid_from=q["v"][0], test_from=q["t"][0])


def train_all(data: Dataset, out: Path, config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate and export every model the data supports; returns the report."""
    torch.manual_seed(config.seed)
    split = time_split(data.events, config.valid_fraction, config.test_fraction)
    report: dict[str, Any] = {"split": split.to_json(), "models": {}, "baselines": {}}
    has_impressions = (
        data.events.filter(pl.col("event") == "impression").select(pl.len()).collect().item() > 0
    )
    if has_impressions:
        ctr_metrics, baseline = train_ctr(data, split, out, config)
        report["models"][f"ctr_{config.ctr_model}"] = ctr_metrics
        report["baselines"].update(baseline)
    else:
        log.info("no impressions in the log: skipping the CTR model")
    report["profiles"] = train_profiles(data, out, config)
    mf_metrics, baseline = train_retrieval(data, split, out, config)
    report["models"]["retrieval_mf"] = mf_metrics
    report["baselines"].update(baseline)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


# ---------------------------------------------------------------------------------- CTR


def ctr_schema(data: Dataset, examples: pl.LazyFrame, n_buckets: int) -> FeatureSchema:
    """Fields: ids, item and user attributes, context columns and position (categorical),
    price (numeric, log1p, standardised on training rows)."""
    categorical = [CategoricalField("user_id", "user"), CategoricalField("item_id", "item")]
    if data.items is not None:
        categorical += [
            CategoricalField(c, "item")
            for c, t in data.items.schema.items()
            if c != "item_id" and t == pl.String
        ]
    if data.users is not None:
        categorical += [
            CategoricalField(c, "user")
            for c, t in data.users.schema.items()
            if c != "user_id" and t == pl.String
        ]
    context = [c for c in data.events.collect_schema().names() if c not in _NOT_CONTEXT]
    categorical += [CategoricalField(c, "context") for c in context]
    categorical.append(CategoricalField("position", "context", default="1"))
    stats = (
        examples.filter(pl.col("split") == "train")
        .select(pl.col("price").fill_null(0.0).clip(lower_bound=0.0).log1p())
        .select(pl.col("price").mean().alias("mean"), pl.col("price").std().alias("std"))
        .collect()
    )
    median_price = examples.select(pl.col("price").median()).collect().item() or 0.0
    numeric = [
        NumericField(
            "price",
            "item",
            transform="log1p",
            mean=float(stats["mean"][0] or 0.0),
            std=float(stats["std"][0] or 1.0) or 1.0,
            default=float(median_price),
        )
    ]
    return FeatureSchema(tuple(categorical), tuple(numeric), n_buckets=n_buckets)


def encode_frame(schema: FeatureSchema, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(cat int64 [n, F], num float32 [n, N]) for a frame holding every field as a column.
    Each distinct value is hashed once, then mapped over the column."""
    cat = np.empty((frame.height, len(schema.categorical)), dtype=np.int64)
    for j, spec in enumerate(schema.categorical):
        column = frame[spec.name].cast(pl.String).fill_null(spec.default)
        uniques = column.unique()
        buckets = schema.encode_categorical(spec, uniques.to_list())
        cat[:, j] = column.replace_strict(
            uniques, pl.Series(buckets), return_dtype=pl.Int64
        ).to_numpy()
    num = np.empty((frame.height, len(schema.numeric)), dtype=np.float32)
    for j, spec in enumerate(schema.numeric):
        num[:, j] = schema.encode_numeric(
            spec, frame[spec.name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        )
    return cat, num


def train_ctr(
    data: Dataset, split: TimeSplit, out: Path, config: TrainConfig
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    examples = ctr_examples(data.events)
    if data.items is not None:
        side = data.items.lazy()
        if "price" in data.items.columns:
            # The price logged with the event wins; the catalogue's fills the gaps.
            side = side.rename({"price": "_catalogue_price"})
        examples = examples.join(side, on="item_id", how="left")
        if "price" in data.items.columns:
            examples = examples.with_columns(
                pl.coalesce("price", "_catalogue_price").alias("price")
            ).drop("_catalogue_price")
    if data.users is not None:
        examples = examples.join(data.users.lazy(), on="user_id", how="left")
    examples = examples.with_columns(split.label(), pl.col("position").cast(pl.String))
    schema = ctr_schema(data, examples, config.n_buckets)
    frame = examples.select(*schema.field_names, "label", "split").collect()
    cat, num = encode_frame(schema, frame)
    label = frame["label"].to_numpy().astype(np.float32)
    part = frame["split"].to_numpy()
    tr, va, te = part == "train", part == "valid", part == "test"
    log.info("CTR examples: %d train, %d valid, %d test", tr.sum(), va.sum(), te.sum())

    model_cls = CTR_MODELS[config.ctr_model]
    model = model_cls(schema.n_buckets, len(schema.categorical), len(schema.numeric))
    fit = FitConfig(
        epochs=config.ctr_epochs, lr=config.ctr_lr, seed=config.seed, progress=config.progress
    )
    fit_ctr(model, cat[tr], num[tr], label[tr], fit)
    a, b = fit_platt(predict_logits(model, cat[va], num[va]), label[va])
    calibrated = CalibratedCTR(model, a, b)
    with torch.no_grad():
        p_test = calibrated(torch.from_numpy(cat[te]), torch.from_numpy(num[te])).numpy()
    test_metrics = {
        "auc": metrics.auc(label[te], p_test),
        "logloss": metrics.logloss(label[te], p_test),
        "ece": metrics.ece(label[te], p_test),
    }
    base_rate = float(label[tr].mean())
    baseline = {
        "ctr_base_rate": {
            "auc": 0.5,
            "logloss": metrics.logloss(label[te], np.full(te.sum(), base_rate)),
        }
    }

    def write(tmp: Path) -> None:
        export_onnx(
            calibrated,
            (torch.from_numpy(cat[:8]), torch.from_numpy(num[:8])),
            ["cat", "num"],
            "pctr",
            tmp / "model.onnx",
        )
        parity = parity_max_abs_error(
            calibrated, tmp / "model.onnx", {"cat": cat[te][:2000], "num": num[te][:2000]}
        )
        manifest["parity_max_abs_error"] = parity
        item_cols = ["item_id"] + [
            f.name for f in schema.categorical_from("item") if f.name != "item_id"
        ]
        item_cols += [f.name for f in schema.numeric_from("item")]
        items = frame_items(data, examples, item_cols)
        items.write_parquet(tmp / "items.parquet")
        user_cols = ["user_id"] + [
            f.name for f in schema.categorical_from("user") if f.name != "user_id"
        ]
        users = (
            data.users.select(user_cols)
            if data.users is not None
            else examples.select("user_id").unique().sort("user_id").collect()
        )
        users.write_parquet(tmp / "users.parquet")

    manifest: dict[str, Any] = {
        "model_type": config.ctr_model,
        "onnx": {
            "file": "model.onnx",
            "inputs": [
                {"name": "cat", "dtype": "int64", "shape": [-1, len(schema.categorical)]},
                {"name": "num", "dtype": "float32", "shape": [-1, len(schema.numeric)]},
            ],
            "outputs": [{"name": "pctr", "dtype": "float32", "shape": [-1]}],
        },
        "features": schema.to_json(),
        "calibration": {"method": "platt", "a": a, "b": b, "applied": "in_graph"},
        "artifacts": {"items": "items.parquet", "users": "users.parquet"},
        "metrics": test_metrics,
        "split": split.to_json(),
        "train": {**asdict(config), "rows": int(tr.sum())},
    }

    path = write_bundle(out, "ctr", "ctr", manifest, write)
    log.info("CTR bundle %s: %s", path, test_metrics)
    return test_metrics, baseline


def frame_items(data: Dataset, examples: pl.LazyFrame, columns: list[str]) -> pl.DataFrame:
    """The catalogue's item attributes (side table, else the last values seen in the log)."""
    if data.items is not None:
        have = [c for c in columns if c in data.items.columns]
        return data.items.select(have)
    return (
        examples.group_by("item_id")
        .agg(pl.col(c).drop_nulls().last() for c in columns if c != "item_id")
        .sort("item_id")
        .collect()
    )


# ----------------------------------------------------------------------------- profiles


def train_profiles(data: Dataset, out: Path, config: TrainConfig) -> dict[str, Any]:
    """User portraits as of the end of the log: RFM scores and segments, activity, top
    category, K-means cluster, plus the users side table's attributes."""
    as_of = data.events.select(pl.col("ts").max()).collect().item()
    items = (
        data.items.lazy() if data.items is not None and "category" in data.items.columns else None
    )
    profiles = user_profiles(data.events, as_of, items=items)
    segments = kmeans_segments(profiles, seed=config.seed)
    table = profiles.join(
        segments.assignments.rename({"segment": "cluster"}), on="user_id", how="left"
    ).with_columns(pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%z"))
    if data.users is not None:
        attrs = [
            c for c, t in data.users.schema.items() if t == pl.String and c not in table.columns
        ]
        table = table.join(data.users.select("user_id", *attrs), on="user_id", how="left")
    summary = {
        "users": table.height,
        "rfm_segments": dict(table.group_by("rfm_segment").len().sort("rfm_segment").iter_rows()),
        "kmeans_k": segments.k,
    }
    manifest: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "artifacts": {"profiles": "profiles.parquet"},
        "rfm_segment_rules": dict(RFM_SEGMENT_RULES),
        "kmeans": segments.to_dict(),
        "summary": summary,
    }
    path = write_bundle(
        out,
        "profiles",
        "profiles",
        manifest,
        lambda tmp: table.write_parquet(tmp / "profiles.parquet"),
    )
    log.info("profiles bundle %s: %s", path, summary)
    return summary


# ---------------------------------------------------------------------------- retrieval


def csr_from_pairs(
    rows: np.ndarray, cols: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) grouping ``cols`` by ``rows``."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols[order].astype(np.int64)


def train_retrieval(
    data: Dataset, split: TimeSplit, out: Path, config: TrainConfig
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    pos = positives(data.events).with_columns(split.label()).collect()
    user_ids = pos["user_id"].unique().sort()
    catalogue = pos["item_id"]
    if data.items is not None:
        catalogue = pl.concat([catalogue, data.items["item_id"]])
    item_ids = catalogue.unique().sort()
    users = pl.DataFrame({"user_id": user_ids, "row": np.arange(len(user_ids), dtype=np.int64)})
    items = pl.DataFrame({"item_id": item_ids, "row": np.arange(len(item_ids), dtype=np.int64)})
    pos = pos.join(users.rename({"row": "u"}), on="user_id").join(
        items.rename({"row": "i"}), on="item_id"
    )
    train = pos.filter(pl.col("split") != "test")
    test = pos.filter(pl.col("split") == "test")
    n_users, n_items = len(user_ids), len(item_ids)

    model = MatrixFactorization(n_users, n_items, config.mf_dim)
    fit = FitConfig(
        epochs=config.mf_epochs,
        lr=config.mf_lr,
        batch_size=1024,
        seed=config.seed,
        progress=config.progress,
    )
    fit_bpr(model, train["u"].to_numpy(), train["i"].to_numpy(), n_items, fit)
    user_emb, item_emb = (t.numpy().astype(np.float32) for t in model.export_embeddings())

    # Evaluation: each test user's new positives, ranking items the user has not consumed in train.
    seen_indptr, seen = csr_from_pairs(train["u"].to_numpy(), train["i"].to_numpy(), n_users)
    test_new = test.join(train.select("u", "i"), on=["u", "i"], how="anti")
    eval_users = np.unique(test_new["u"].to_numpy())
    truth_indptr, truth = csr_from_pairs(
        test_new["u"].to_numpy(), test_new["i"].to_numpy(), n_users
    )
    relevant = [truth[truth_indptr[u] : truth_indptr[u + 1]] for u in eval_users]
    excl = (
        np.concatenate([[0], np.cumsum(np.diff(seen_indptr)[eval_users])]).astype(np.int64),
        np.concatenate([seen[seen_indptr[u] : seen_indptr[u + 1]] for u in eval_users])
        if len(eval_users)
        else np.zeros(0, dtype=np.int64),
    )
    k = config.k
    ids, _ = topk(user_emb[eval_users], item_emb, k, exclude=excl)
    mf_metrics = ranking_metrics(ids, relevant, n_items, k)
    popularity = np.bincount(train["i"].to_numpy(), minlength=n_items).astype(np.float32)
    pop_ids, _ = topk(
        np.ones((len(eval_users), 1), np.float32), popularity[:, None].copy(), k, exclude=excl
    )
    baseline = {"popularity": ranking_metrics(pop_ids, relevant, n_items, k)}

    # Serving artefacts reflect all history: consumed items and popularity over every split.
    all_indptr, all_seen = csr_from_pairs(pos["u"].to_numpy(), pos["i"].to_numpy(), n_users)
    all_popularity = np.bincount(pos["i"].to_numpy(), minlength=n_items).astype(np.float32)
    item_table = items
    if data.items is not None:
        attrs = [c for c in ("category", "price") if c in data.items.columns]
        item_table = items.join(data.items.select("item_id", *attrs), on="item_id", how="left")

    def write(tmp: Path) -> None:
        example = (torch.zeros(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
        export_onnx(model, example, ["user_index", "item_index"], "score", tmp / "model.onnx")
        rng = np.random.default_rng(config.seed)
        parity = parity_max_abs_error(
            model,
            tmp / "model.onnx",
            {
                "user_index": rng.integers(0, n_users, 2000).astype(np.int64),
                "item_index": rng.integers(0, n_items, 2000).astype(np.int64),
            },
        )
        manifest["parity_max_abs_error"] = parity
        np.save(tmp / "user_embeddings.npy", user_emb)
        np.save(tmp / "item_embeddings.npy", item_emb)
        np.save(tmp / "consumed_indptr.npy", all_indptr)
        np.save(tmp / "consumed_indices.npy", all_seen)
        np.save(tmp / "popularity.npy", all_popularity)
        users.write_parquet(tmp / "users.parquet")
        item_table.write_parquet(tmp / "items.parquet")

    manifest: dict[str, Any] = {
        "model_type": "mf_bpr",
        "onnx": {
            "file": "model.onnx",
            "inputs": [
                {"name": "user_index", "dtype": "int64", "shape": [-1]},
                {"name": "item_index", "dtype": "int64", "shape": [-1]},
            ],
            "outputs": [{"name": "score", "dtype": "float32", "shape": [-1]}],
        },
        "embedding_dim": int(user_emb.shape[1]),
        # Columns [0, latent_dim) are the latent factors; the last holds the item bias.
        "latent_dim": config.mf_dim,
        "metric": "ip",
        "artifacts": {
            "user_embeddings": "user_embeddings.npy",
            "item_embeddings": "item_embeddings.npy",
            "consumed_indptr": "consumed_indptr.npy",
            "consumed_indices": "consumed_indices.npy",
            "popularity": "popularity.npy",
            "users": "users.parquet",
            "items": "items.parquet",
        },
        "metrics": mf_metrics,
        "split": split.to_json(),
        "train": {**asdict(config), "positives": int(train.height)},
    }
    path = write_bundle(out, "retrieval", "retrieval", manifest, write)
    log.info("retrieval bundle %s: %s", path, mf_metrics)
    return mf_metrics, baseline


def ranking_metrics(
    ids: np.ndarray, relevant: list[np.ndarray], n_items: int, k: int
) -> dict[str, float]:
    return {
        f"recall@{k}": metrics.recall_at_k(ids, relevant, k),
        "ndcg@10": metrics.ndcg_at_k(ids, relevant, 10),
        "hitrate@10": metrics.hitrate_at_k(ids, relevant, 10),
        "coverage": metrics.coverage(ids, n_items),
    }
