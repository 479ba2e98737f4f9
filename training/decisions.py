"""Training data from the server's decision log: the impressions the server itself logged,
with the CTR features exactly as served, joined to later clicks and conversions by request id
and item (the feedback log's events carry the request id the response returned).

The served features were encoded by the serving model's schema; the model trained here keeps
that schema and the serving bundle's side tables, so what it learns from is what it will be
given. One field is replaced: the position the server scored with (its default) becomes the
slot the item was shown in, as the event trainer does, so the position tower learns the
examination effect and serving still scores at the default position.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from kernels.bundle_manifest import MANIFEST_FILE, CTRBundle, parse_manifest
from kernels.decision_table import PARQUET_DIR, SCHEMAS_DIR
from kernels.featurize import FeatureSchema
from training.errors import InputError, NotEnoughData

log = logging.getLogger(__name__)
OUTCOMES = ("clicked", "converted", "revenue")


def scan_decisions(directory: Path) -> pl.LazyFrame:
    """The decision table (kernels.decision_table) of a decision log directory."""
    files = sorted((Path(directory) / PARQUET_DIR).glob("*.parquet"))
    if not files:
        raise InputError(
            f"{directory}: no decision Parquet under {PARQUET_DIR}/ (is it a decision log, "
            "and was the server stopped or its segments sealed?)"
        )
    return pl.scan_parquet(files)


def logged_schema(directory: Path, fingerprint: str) -> FeatureSchema:
    path = Path(directory) / SCHEMAS_DIR / f"{fingerprint}.json"
    if not path.exists():
        raise InputError(f"{path}: the decisions' feature schema is missing")
    return FeatureSchema.from_json(json.loads(path.read_text()))


def outcomes(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per (request_id, item_id): clicked, converted (a purchase) and revenue, from events in
    the trainer's event schema (the feedback log's Parquet)."""
    return (
        events.filter(pl.col("request_id").is_not_null())
        .group_by("request_id", "item_id")
        .agg(
            (pl.col("event") == "click").any().cast(pl.Float32).alias("clicked"),
            (pl.col("event") == "purchase").any().cast(pl.Float32).alias("converted"),
            pl.when(pl.col("event") == "purchase")
            .then(pl.col("value").fill_null(0.0))
            .otherwise(0.0)
            .sum()
            .alias("revenue"),
        )
    )


def join_outcomes(decisions: pl.LazyFrame, events: pl.LazyFrame) -> pl.LazyFrame:
    """Every candidate row with its outcomes (0 where nothing came back)."""
    return decisions.join(outcomes(events), on=["request_id", "item_id"], how="left").with_columns(
        pl.col(c).fill_null(0.0) for c in OUTCOMES
    )


def read_feedback(directory: Path) -> pl.LazyFrame:
    """The events of a feedback log (its Parquet) or of any Parquet file of events."""
    path = Path(directory)
    files = sorted((path / "parquet").glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise InputError(f"{directory}: no events Parquet (a feedback log directory or a file)")
    return pl.scan_parquet(files)


@dataclass(frozen=True)
class ServedExamples:
    """Shown impressions in time order: the served inputs and what followed."""

    cat: np.ndarray
    num: np.ndarray
    label: np.ndarray  # clicked
    frame: pl.DataFrame  # request_id, ts, user_id, item_id, position, propensity, outcomes
    schema: FeatureSchema
    model: str
    model_version: int


def served_examples(
    decisions_dir: Path, events: pl.LazyFrame, rpc: str | None = None
) -> ServedExamples:
    """The shown rows of the decision log (one RPC's, or all with CTR features) joined to their
    outcomes; the position field holds the slot shown."""
    decisions = scan_decisions(decisions_dir).filter(
        (pl.col("position") > 0) & (pl.col("feature_schema") != "")
    )
    if rpc is not None:
        decisions = decisions.filter(pl.col("rpc") == rpc)
    frame = join_outcomes(decisions, events).sort("ts", "request_id", "position").collect()
    if not frame.height:
        raise NotEnoughData(f"{decisions_dir}: no shown decisions with served features")
    fingerprints = frame["feature_schema"].unique().to_list()
    if len(fingerprints) > 1:
        # One schema per training set: keep the most recent one's rows.
        latest = frame["feature_schema"][-1]
        log.warning("decisions use %d feature schemas; training on %s", len(fingerprints), latest)
        frame = frame.filter(pl.col("feature_schema") == latest)
    schema = logged_schema(decisions_dir, frame["feature_schema"][0])
    cat = np.array(frame["cat"].to_list(), dtype=np.int64).reshape(frame.height, -1)
    num = np.array(frame["num"].to_list(), dtype=np.float32).reshape(frame.height, -1)
    names = [f.name for f in schema.categorical]
    if "position" in names:
        j = names.index("position")
        spec = schema.categorical[j]
        positions = frame["position"].to_numpy()
        for p in np.unique(positions):
            cat[positions == p, j] = schema.encode_categorical(spec, [str(int(p))])[0]
    model, version = Counter(zip(frame["model"], frame["model_version"], strict=True)).most_common(
        1
    )[0][0]
    keep = ["request_id", "ts", "user_id", "item_id", "position", "propensity", "score", *OUTCOMES]
    return ServedExamples(
        cat,
        num,
        frame["clicked"].to_numpy().astype(np.float32),
        frame.select(keep),
        schema,
        model,
        int(version),
    )


def time_split(n: int, test_fraction: float, valid_fraction: float) -> np.ndarray:
    """Each row's part, "train", "valid" or "test", by time order (rows sorted by time)."""
    part = np.full(n, "train", dtype=object)
    test_start = round(n * (1 - test_fraction))
    valid_start = round(n * (1 - test_fraction - valid_fraction))
    part[valid_start:test_start] = "valid"
    part[test_start:] = "test"
    return part


def train_from_decisions(
    decisions_dir: Path,
    events: pl.LazyFrame,
    serving_repo: Path,
    out: Path,
    model_name: str = "lr",
    config: Any = None,
    name: str = "ctr",
) -> dict[str, Any]:
    """Train one CTR model on the served features (time split), calibrate it on valid, and
    write it as the next version of ``name`` in ``out`` with the serving bundle's schema and
    side tables. Returns its test metrics and what it trained on."""
    import torch

    from kernels.bundle_manifest import Calibration
    from training import metrics
    from training.fit import fit_ctr, predict_logits
    from training.pipeline import (
        TrainConfig,
        calibrate,
        ctr_fit_config,
        ctr_model,
        write_ctr_bundle,
    )

    def predict(c: np.ndarray, n: np.ndarray) -> np.ndarray:
        logits = torch.from_numpy(predict_logits(calibrated.model, c, n))
        with torch.no_grad():
            return calibrated.calibration(logits).numpy().astype(np.float64)

    config = config or TrainConfig(progress=False)
    data = served_examples(decisions_dir, events)
    bundle = Path(serving_repo) / data.model / str(data.model_version)
    if not (bundle / MANIFEST_FILE).exists():
        raise InputError(
            f"{bundle}: the serving bundle the decisions name ({data.model} "
            f"v{data.model_version}) is not in {serving_repo}"
        )
    base = parse_manifest(json.loads((bundle / MANIFEST_FILE).read_text()))
    if not isinstance(base, CTRBundle):
        raise InputError(f"{bundle} is not a CTR bundle")
    if FeatureSchema.from_json(base.features) != data.schema:
        raise InputError(f"{bundle}: its feature schema is not the one the decisions logged")
    part = time_split(len(data.label), config.test_fraction, config.valid_fraction)
    tr, va, te = (part == p for p in ("train", "valid", "test"))
    label = data.label
    for where, m in (("train", tr), ("valid", va), ("test", te)):
        if not (m.any() and 0 < label[m].sum() < m.sum()):
            raise NotEnoughData(
                f"decisions: {where} needs shown items with and without clicks "
                f"({int(m.sum())} rows, {int(label[m].sum())} clicked)"
            )
    cat, num = data.cat, data.num
    position_tower = bool(base.train and base.train.get("position_tower")) or (
        config.position_bias
        and "position" in data.schema.field_names
        and data.frame["position"].n_unique() > 1
    )
    torch.manual_seed(config.seed)
    model = ctr_model(model_name, data.schema, config, position_tower)
    fit_ctr(
        model, cat[tr], num[tr], label[tr], ctr_fit_config(config), (cat[va], num[va], label[va])
    )
    calibrated = calibrate(
        model, predict_logits(model, cat[va], num[va]), label[va], config.calibration
    )
    p_va, p_te = predict(cat[va], num[va]), predict(cat[te], num[te])
    test = metrics.evaluate_classification(label[te], p_te, ("auc", "logloss", "ece"))
    valid = metrics.evaluate_classification(label[va], p_va, ("auc", "logloss", "ece"))
    # A pCTR graph only: the serving bundle's pCVR output (ESMM), if any, is not carried over.
    onnx = base.onnx.model_copy(
        update={"outputs": [o for o in base.onnx.outputs if o.name == "pctr"]}
    )
    manifest = base.model_copy(
        update={
            "onnx": onnx,
            "cvr": None,
            "model_type": model_name,
            "calibration": Calibration(**calibrated.calibration.to_json(), applied="in_graph"),
            "metrics": test,
            "valid_metrics": valid,
            "split": {
                "kind": "decisions-time",
                "rows": {p: int((part == p).sum()) for p in ("train", "valid", "test")},
            },
            "train": {
                **json.loads(json.dumps(asdict(config), default=str)),
                "model": model_name,
                "source": "decisions",
                "decisions": str(decisions_dir),
                "served_by": f"{data.model}:{data.model_version}",
                "rows": int(tr.sum()),
                "position_tower": position_tower,
            },
        }
    )
    items = pl.read_parquet(bundle / base.artifacts["items"])
    users = pl.read_parquet(bundle / base.artifacts["users"])
    user_item = {
        key.split(":", 1)[1]: pl.read_parquet(bundle / file)
        for key, file in base.artifacts.items()
        if key.startswith("user_item:")
    }
    parity = {"cat": cat[te][:2000], "num": num[te][:2000]}
    path = write_ctr_bundle(
        out, name, calibrated, manifest, cat, num, parity, items, users, user_item
    )
    return {"bundle": str(path), "test": test, "valid": valid, "rows": len(label)}
