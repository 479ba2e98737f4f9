"""`reachrank train`: event log → leak-free split → CTR, retrieval and profile bundles, each
evaluated on the same split, plus ``report.json`` and a human ``report.md`` beside them.

CTR models (LR, FM, DeepFM, DCN-v2) learn on the train part, are calibrated (Platt or
isotonic, inside the exported graph) on valid, and are scored on test; the one with the
lowest valid logloss ships as ``ctr``, the others as ``ctr-<model>``. Retrieval follows the
same protocol in :mod:`training.retrieval`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from kernels.bundle_manifest import (
    CTR_FILES,
    PROFILES_FILES,
    CTRBundle,
    Graph,
    History,
    ProfilesBundle,
    Tensor,
)
from kernels.bundle_manifest import Calibration as CalibrationSpec
from kernels.featurize import (
    CategoricalField,
    FeatureSchema,
    NumericField,
    user_item_artifact,
)
from training import metrics
from training.budget import CTR_SHARE, SEQUENCE_SHARE, Budget, search, setting_label
from training.bundle import write_bundle, write_metrics_json
from training.cvr import CVRConfig, CVRData, CVRResult, has_conversions, oracle_pcvr, train_cvr
from training.errors import NotEnoughData
from training.examples import ctr_examples, positives
from training.export import export_onnx, parity_max_abs_error
from training.fit import (
    ArrayRows,
    FitConfig,
    Rows,
    fit_ctr_rows,
    fit_isotonic,
    fit_platt,
    predict_rows,
)
from training.history import (
    HistorySpec,
    history_fields,
    history_tables,
    with_history_before,
)
from training.models.ctr import (
    CTR_MODELS,
    CalibratedCTR,
    CTRSize,
    IsotonicCalibration,
    PlattScaling,
    PositionBias,
)
from training.models.ctr_serving import serving_form
from training.models.esmm import WithCVR
from training.profiles import RFM_SEGMENT_RULES, KMeansSegments, kmeans_segments, user_profiles
from training.report import write_report
from training.retrieval import RetrievalConfig, interactions, train_retrieval
from training.simulate import DEVICES, GroundTruth, item_index, user_index
from training.splits import Split, global_time_split, per_user_split
from training.streaming import StreamingConfig
from training.streaming_ctr import CTRExamples, streamed_ctr

log = logging.getLogger(__name__)

# Columns of the event log that are never used as context features; the last four are how the
# feedback log says an event was served (A/B arm, model), which a request never carries.
_NOT_CONTEXT = {"user_id", "item_id", "ts", "event", "value", "price", "position", "request_id"}
_NOT_CONTEXT |= {"experiment", "variant", "model", "model_version"}

SplitKind = Literal["global", "per-user"]
Calibration = Literal["platt", "isotonic"]


@dataclass(frozen=True)
class TrainConfig:
    """What `reachrank train` builds and how."""

    # Every CTR model competes by default; the best on valid logloss ships.
    ctr_models: tuple[str, ...] = ("lr", "fm", "deepfm", "dcn")
    ctr_size: CTRSize = field(default_factory=CTRSize)
    ctr_epochs: int = 3
    ctr_lr: float = 0.01
    ctr_batch_size: int = 2048
    ctr_weight_decay: float = 0.0
    calibration: Calibration = "platt"
    n_buckets: int = 1 << 17
    # Context columns read as numbers (log1p, standardised) instead of hashed categories.
    numeric_context: tuple[str, ...] = ()
    # History features (each user's past impressions, clicks and smoothed CTR, overall and per
    # item category; see training.history). Only for logs whose click events carry the time
    # of the click: the ad readers stamp clicks with the impression's time, so a past label
    # would look known before it was.
    history: bool = True
    history_strength: float = 20.0
    # Examination x relevance (training.models.ctr.PositionBias) when rows have several
    # positions; else the position is one more field.
    position_bias: bool = True
    # pCVR (training.cvr) when the log has purchases: served as every CTR bundle's `pcvr`.
    cvr: CVRConfig = field(default_factory=CVRConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    split: SplitKind = "global"
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    # Retrieval's validation share under a global split (None: mirror test, see
    # :func:`mirrored_valid_fraction`). CTR models train on train only and calibrate on valid,
    # so they keep ``valid_fraction``; retrieval refits on train + valid before test, so a
    # larger validation part costs it nothing and makes tuning see the horizon test scores.
    retrieval_valid_fraction: float | None = None
    # Try the alternatives of CTR_SEARCH per CTR model (within the budget) besides the
    # configured size/lr/epochs.
    ctr_search: bool = True
    # Wall-clock budget (see training.budget: shares go to the CTR search and the sequence
    # model's epochs); None: no limit.
    budget_minutes: float | None = 10.0
    seed: int = 0
    progress: bool = True
    # Stream the tables that scale with events through a work directory (training.streaming);
    # None: hold them in memory.
    streaming: StreamingConfig | None = None


# What the CTR search tries after a model's configured setting, in order (a tight budget
# cuts the last ones): wider embeddings, weight decay on the dense weights. (A slower learning
# rate over twice the epochs cost the most and lost AUC on the default simulation, for LR
# and DCN alike: not tried.)
CTR_SEARCH: tuple[dict[str, Any], ...] = (
    {"dim": 16},
    {"weight_decay": 1e-4},
)


def mirrored_valid_fraction(test_fraction: float, valid_fraction: float) -> float:
    """As large a share as test's (the same horizon, about as many users), but at least
    ``valid_fraction`` and at most half of what precedes the test part."""
    return max(valid_fraction, min(test_fraction, (1.0 - test_fraction) / 2.0))


@dataclass
class Dataset:
    """A conformed event log with optional side tables and, for simulated logs, the truth."""

    events: pl.LazyFrame
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    ground_truth: GroundTruth | None = None


@dataclass(frozen=True)
class SplitPlan:
    """How every frame the trainer evaluates on is split: one global time cut pair (computed
    once over the whole event log, so CTR and retrieval share it) or each user's last
    fractions of that frame's own rows."""

    kind: SplitKind
    test_fraction: float
    valid_fraction: float
    test_cut: datetime | None = None
    valid_cut: datetime | None = None

    @classmethod
    def plan(cls, events: pl.LazyFrame, config: TrainConfig) -> SplitPlan:
        if config.split == "global":
            spec = global_time_split(
                events, test_fraction=config.test_fraction, valid_fraction=config.valid_fraction
            ).spec
            return cls(
                "global",
                config.test_fraction,
                config.valid_fraction,
                datetime.fromisoformat(spec["test_cut"]),
                datetime.fromisoformat(spec["valid_cut"]),
            )
        if config.split == "per-user":
            return cls("per-user", config.test_fraction, config.valid_fraction)
        raise ValueError(f"unknown split {config.split!r}; use 'global' or 'per-user'")

    def for_retrieval(self, events: pl.LazyFrame, config: TrainConfig) -> SplitPlan:
        """The same test cut, and under a global split the validation part retrieval tunes
        on: the period just before test, holding ``config.retrieval_valid_fraction`` of the
        events (default :func:`mirrored_valid_fraction`)."""
        if self.kind != "global":
            return self
        share = config.retrieval_valid_fraction
        if share is None:
            share = mirrored_valid_fraction(self.test_fraction, self.valid_fraction)
        if share == self.valid_fraction:
            return self
        spec = global_time_split(
            events, test_fraction=self.test_fraction, valid_fraction=share
        ).spec
        assert datetime.fromisoformat(spec["test_cut"]) == self.test_cut
        return SplitPlan(
            "global",
            self.test_fraction,
            share,
            self.test_cut,
            datetime.fromisoformat(spec["valid_cut"]),
        )

    def split(self, frame: pl.LazyFrame) -> Split:
        if self.kind == "global":
            split = global_time_split(frame, test_cut=self.test_cut, valid_cut=self.valid_cut)
            spec = {**split.spec, "test_fraction": self.test_fraction}
            return Split(
                split.train,
                split.valid,
                split.test,
                {**spec, "valid_fraction": self.valid_fraction},
            )
        return per_user_split(
            frame,
            test_fraction=self.test_fraction,
            valid_fraction=self.valid_fraction if self.valid_fraction > 0 else None,
        )

    def label(self, frame: pl.LazyFrame) -> tuple[pl.LazyFrame, dict[str, Any]]:
        """``frame`` with a ``split`` column (train/valid/test), and the split's spec."""
        split = self.split(frame)
        labelled = pl.concat(
            [
                split.train.with_columns(pl.lit("train").alias("split")),
                split.valid.with_columns(pl.lit("valid").alias("split")),
                split.test.with_columns(pl.lit("test").alias("split")),
            ]
        )
        return labelled, split.spec


def part_sizes(frame: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Rows and users per split part of a labelled frame."""
    sizes = (
        frame.group_by("split")
        .agg(pl.len().alias("rows"), pl.col("user_id").n_unique().alias("users"))
        .sort("split")
    )
    return {
        r["split"]: {"rows": r["rows"], "users": r["users"]} for r in sizes.iter_rows(named=True)
    }


def train_all(data: Dataset, out: Path, config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate and export every model the data supports; returns the report."""
    torch.manual_seed(config.seed)
    plan = SplitPlan.plan(data.events, config)
    report: dict[str, Any] = {
        "split": {
            "kind": plan.kind,
            "test_fraction": plan.test_fraction,
            "valid_fraction": plan.valid_fraction,
        },
        "models": {},
        "baselines": {},
        "valid": {},
        "chosen": {},
    }
    if plan.test_cut is not None:
        report["split"].update(
            test_cut=plan.test_cut.isoformat(),
            valid_cut=plan.valid_cut.isoformat(),  # type: ignore[union-attr]
        )
    curves: dict[str, metrics.ReliabilityCurve] = {}
    has_impressions = (
        data.events.filter(pl.col("event") == "impression").select(pl.len()).collect().item() > 0
    )
    ctr = None
    if has_impressions:
        try:
            ctr = train_ctr(data, plan, out, config)
        except NotEnoughData as exc:
            log.warning("skipping the CTR models: %s", exc)
    else:
        log.info("no impressions in the log: skipping the CTR models")
    if ctr is not None:
        report["split"]["ctr"] = ctr.sizes
        for name, m in ctr.models.items():
            report["models"][f"ctr_{name}"] = m
        report["baselines"].update({f"ctr_{k}": v for k, v in ctr.baselines.items()})
        report["valid"].update({f"ctr_{k}": v for k, v in ctr.valid.items()})
        report["chosen"]["ctr"] = ctr.best
        report["other_calibration"] = {f"ctr_{k}": v for k, v in ctr.other_calibration.items()}
        report["ctr_tuned"] = {f"ctr_{k}": v for k, v in ctr.tuned.items()}
        curves = ctr.curves
        if ctr.cvr is not None:
            report["cvr"] = ctr.cvr.to_json()
    report["profiles"] = train_profiles(data, out, config)

    retrieval_plan = plan.for_retrieval(data.events, config)
    if retrieval_plan.valid_cut != plan.valid_cut:
        report["split"].update(
            retrieval_valid_fraction=retrieval_plan.valid_fraction,
            retrieval_valid_cut=retrieval_plan.valid_cut.isoformat(),  # type: ignore[union-attr]
        )
    pos, spec = retrieval_plan.label(
        positives(data.events).with_columns(pl.lit("positive").alias("event"))
    )
    # Sorted for the same reason as the CTR frame: reproducible batches.
    pos = pos.collect().sort("user_id", "item_id")
    report["split"]["retrieval"] = part_sizes(pos)
    catalogue = data.items["item_id"] if data.items is not None else None
    retrieval = config.retrieval
    if config.budget_minutes is not None:
        retrieval = replace(retrieval, sequence_minutes=config.budget_minutes * SEQUENCE_SHARE)
    result = train_retrieval(interactions(pos, catalogue), out, retrieval, spec, data.items)
    report["models"].update({f"retrieval_{k}": v for k, v in result.models.items()})
    report["baselines"].update(result.baselines)
    report["valid"].update({f"retrieval_{k}": v for k, v in result.valid.items()})
    report["chosen"]["retrieval"] = result.best
    report["leaderboard"] = {"retrieval": result.leaderboard}
    report["why"] = {"retrieval": result.why}
    report["config"] = json.loads(json.dumps(asdict(config), default=str))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_report(out, report, curves)
    return report


@dataclass
class CTRResult:
    """Test metrics per CTR model, baselines, valid metrics, the chosen model, curves."""

    models: dict[str, dict[str, float]]
    baselines: dict[str, dict[str, float]]
    valid: dict[str, dict[str, float]]
    best: str
    sizes: dict[str, dict[str, int]]
    curves: dict[str, metrics.ReliabilityCurve]
    # Test labels and each model's calibrated test pCTR (for bootstrap spreads in the bench).
    test_label: np.ndarray
    test_pctr: dict[str, np.ndarray]
    # Test logloss/ECE of each model under the calibration not shipped.
    other_calibration: dict[str, dict[str, Any]]
    # Per model: the setting the search kept and the valid logloss of each one tried.
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The conversion model shipped in the CTR bundles (None: no purchases in the log).
    cvr: CVRResult | None = None


def ctr_frame(data: Dataset, conversions: bool = False) -> pl.LazyFrame:
    """Labelled impressions (with ``converted`` when ``conversions``) joined with the item and
    user side tables."""
    examples = ctr_examples(data.events, conversions)
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
    return examples.with_columns(pl.col("position").cast(pl.String))


def oracle_probability(truth: GroundTruth, frame: pl.DataFrame) -> np.ndarray:
    """The simulator's true click probability of each impression row."""
    device = frame["device"].replace_strict(
        {d: i for i, d in enumerate(DEVICES)}, return_dtype=pl.Int64
    )
    return truth.click_probability(
        user_index(frame["user_id"]),
        item_index(frame["item_id"]),
        frame["position"].cast(pl.Int64).to_numpy(),
        device.to_numpy(),
    )


def classification_metrics(label: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return metrics.evaluate_classification(label, p, ("auc", "logloss", "ece"))


def calibrate(
    model: torch.nn.Module, logits: np.ndarray, label: np.ndarray, method: Calibration
) -> CalibratedCTR:
    """Wrap ``model`` with a calibration fitted on held-out (logit, label) pairs."""
    if method == "platt":
        a, b = fit_platt(logits, label)
        return CalibratedCTR(model, PlattScaling(a, b))
    if method == "isotonic":
        x, y = fit_isotonic(logits, label)
        return CalibratedCTR(model, IsotonicCalibration(x, y))
    raise ValueError(f"unknown calibration {method!r}; use 'platt' or 'isotonic'")


@torch.no_grad()
def predict_pctr(model: CalibratedCTR, rows: Rows, batch_size: int = 8192) -> np.ndarray:
    # In batches: the isotonic calibration holds a row x knot matrix (a few MB at 8192 rows;
    # 65,536 rows x 167 knots took 44 MB, more than a memory-limited trainer had).
    logits = torch.from_numpy(predict_rows(model.model, rows))
    out = np.empty(len(logits), dtype=np.float64)
    for i in range(0, len(logits), batch_size):
        out[i : i + batch_size] = model.calibration(logits[i : i + batch_size]).numpy()
    return out


def in_memory_ctr(
    data: Dataset, plan: SplitPlan, config: TrainConfig, conversions: bool = False
) -> CTRExamples:
    """The labelled CTR examples with their features, collected and encoded in memory."""
    examples, spec = plan.label(ctr_frame(data, conversions))
    history = ctr_history(data, examples, config)
    if history is not None:
        # Collected once: the schema's statistics and the frame below both read it.
        examples = with_history_before(examples, data.events, data.items, history).collect().lazy()
    schema = ctr_schema(data, examples, config.n_buckets, config.numeric_context, history)
    keep = [c for c in ("device",) if c in examples.collect_schema().names()]
    frame = examples.select(
        *dict.fromkeys([*schema.field_names, "user_id", "item_id", "position", *keep]),
        "label",
        *(["converted"] if conversions else []),
        "split",
        "ts",
    ).collect()
    # Joins do not keep row order: sort so that batches, and so the models, are reproducible.
    frame = frame.sort("ts", "user_id", "item_id", "position")
    cat, num = encode_frame(schema, frame)
    label = frame["label"].to_numpy().astype(np.float32)
    part = frame["split"].to_numpy()
    tr, va, te = part == "train", part == "valid", part == "test"
    masks = {"train": tr, "valid": va, "test": te}
    oracle = None
    if data.ground_truth is not None and "device" in frame.columns:
        oracle = oracle_probability(data.ground_truth, frame.filter(pl.Series(te)))
    return CTRExamples(
        examples=examples,
        spec=spec,
        history=history,
        schema=schema,
        rows={p: ArrayRows(cat[m], num[m], label[m]) for p, m in masks.items()},
        sizes=part_sizes(frame),
        positions=frame["position"].n_unique(),
        users=frame.select("user_id").unique().sort("user_id"),
        example=(cat[:8], num[:8]),
        oracle_test=oracle,
        frame=frame,
        arrays=(cat, num, label),
        masks=(tr, va, te),
    )


def train_ctr(data: Dataset, plan: SplitPlan, out: Path, config: TrainConfig) -> CTRResult:
    """Fit every configured CTR model on the same split; ship the best by valid logloss."""
    conversions = config.cvr.enabled and has_conversions(data.events)
    if config.streaming is not None and not conversions:
        ctr_rows = streamed_ctr(data, plan, config)
    else:
        if config.streaming is not None:
            log.info("the conversion model trains on CTR rows in memory")
        ctr_rows = in_memory_ctr(data, plan, config, conversions)
    examples, spec, history, schema = (
        ctr_rows.examples,
        ctr_rows.spec,
        ctr_rows.history,
        ctr_rows.schema,
    )
    train_rows, valid_rows, test_rows = (ctr_rows.rows[p] for p in ("train", "valid", "test"))
    # AUC and calibration need both labels in every part.
    parts = (("train", train_rows), ("valid", valid_rows), ("test", test_rows))
    both = [bool(len(r) and 0 < r.positives < len(r)) for _, r in parts]
    if not all(both):
        counts = ", ".join(f"{len(r)} ({r.positives} clicked) in {n}" for n, r in parts)
        raise NotEnoughData(
            "CTR needs impressions with and without clicks in each of train, valid and test; "
            f"got {counts}"
        )
    log.info("CTR examples: %d train, %d valid, %d test", *(len(r) for _, r in parts))
    y_va, y_te = valid_rows.labels(), test_rows.labels()
    position_tower = config.position_bias and ctr_rows.positions > 1
    base_rate = train_rows.rate()
    baselines = {
        "base_rate": {
            "auc": 0.5,
            "logloss": metrics.logloss(y_te, np.full(len(test_rows), base_rate)),
            "ece": metrics.ece(y_te, np.full(len(test_rows), base_rate)),
        }
    }
    oracle_auc = None
    if ctr_rows.oracle_test is not None:
        p_oracle = ctr_rows.oracle_test
        baselines["oracle"] = classification_metrics(y_te, p_oracle)
        oracle_auc = baselines["oracle"]["auc"]

    fitted: dict[str, CalibratedCTR] = {}
    test_metrics: dict[str, dict[str, float]] = {}
    valid_metrics: dict[str, dict[str, float]] = {}
    curves: dict[str, metrics.ReliabilityCurve] = {}
    test_pctr: dict[str, np.ndarray] = {}
    other_calibration: dict[str, dict[str, Any]] = {}
    tuned: dict[str, dict[str, Any]] = {}
    budget = Budget.of_minutes(
        None if config.budget_minutes is None else config.budget_minutes * CTR_SHARE
    )
    for index, name in enumerate(config.ctr_models):

        def fit_setting(
            setting: dict[str, Any], name: str = name
        ) -> tuple[tuple[torch.nn.Module, np.ndarray, CalibratedCTR, np.ndarray], float]:
            run = with_ctr_setting(config, setting)
            # Same seed before each fit: every model starts from a reproducible draw.
            torch.manual_seed(config.seed)
            model = ctr_model(name, schema, run, position_tower)
            fit_ctr_rows(model, train_rows, ctr_fit_config(run), valid_rows)
            logits = predict_rows(model, valid_rows)
            calibrated = calibrate(model, logits, y_va, config.calibration)
            p = predict_pctr(calibrated, valid_rows)
            return (model, logits, calibrated, p), metrics.logloss(y_va, p)

        found = search(
            ctr_settings(name, config),
            fit_setting,
            budget.share(len(config.ctr_models) - index),
            setting_label,
        )
        model, logits_va, calibrated, p_va = found.fitted
        tuned[name] = {"setting": found.setting, "valid_logloss_by_setting": found.tried}
        if len(found.tried) > 1:
            log.info(
                "CTR %s: %s (valid logloss by setting: %s)",
                name,
                setting_label(found.setting),
                found.tried,
            )
        p_te = predict_pctr(calibrated, test_rows)
        valid_metrics[name] = classification_metrics(y_va, p_va)
        test_metrics[name] = classification_metrics(y_te, p_te)
        if oracle_auc is not None:
            test_metrics[name]["oracle_auc"] = oracle_auc
        # The other calibration on the same model, for the report's comparison (not shipped).
        other = "isotonic" if config.calibration == "platt" else "platt"
        alternative = calibrate(model, logits_va, y_va, other)
        p_alt = predict_pctr(alternative, test_rows)
        other_calibration[name] = {
            "calibration": other,
            "logloss": metrics.logloss(y_te, p_alt),
            "ece": metrics.ece(y_te, p_alt),
        }
        curves[name] = metrics.reliability_curve(y_te, p_te, n_bins=10, strategy="quantile")
        fitted[name] = calibrated
        test_pctr[name] = p_te
        log.info("CTR %s: test %s", name, test_metrics[name])
    best = min(fitted, key=lambda n: valid_metrics[n]["logloss"])
    cvr = None
    if conversions:
        converted = ctr_rows.frame["converted"].to_numpy().astype(np.float32)
        cvr = train_cvr(
            CVRData(*ctr_rows.arrays, converted, *ctr_rows.masks),
            schema.n_buckets,
            [f.name for f in schema.categorical].index("position") if position_tower else None,
            config.cvr,
            ctr_fit_config(config),
            lambda m, logits, y: calibrate(m, logits, y, config.calibration),
            test_pctr[best],
            None
            if oracle_auc is None
            else (
                p_oracle,
                oracle_pcvr(data.ground_truth, ctr_rows.frame.filter(pl.Series(ctr_rows.masks[2]))),
            ),
        )

    items = frame_items(data, examples, _item_columns(schema))
    user_cols = ["user_id"] + [
        f.name for f in schema.categorical_from("user") if f.name != "user_id"
    ]
    users = data.users.select(user_cols) if data.users is not None else ctr_rows.users
    user_item: dict[str, pl.DataFrame] = {}
    if history is not None:
        user_history, user_item = history_tables(data.events, data.items, history)
        # The shipped histories count every event up to here; the engine adds later ones.
        as_of_ms = int(data.events.select(pl.col("ts").max().dt.epoch("ms")).collect().item())
        users = users.join(user_history, on="user_id", how="full", coalesce=True).sort("user_id")
    parity_rows = dict(zip(("cat", "num"), test_rows.head(2000), strict=True))
    for name, model in fitted.items():
        manifest = CTRBundle(
            model_type=name,
            onnx=Graph(
                inputs=[
                    Tensor(name="cat", dtype="int64", shape=[-1, len(schema.categorical)]),
                    Tensor(name="num", dtype="float32", shape=[-1, len(schema.numeric)]),
                ],
                outputs=[
                    Tensor(name=out, dtype="float32", shape=[-1])
                    for out in ("pctr", "pcvr")[: 1 + (cvr is not None)]
                ],
            ),
            cvr={"model": "esmm", "metrics": cvr.metrics} if cvr is not None else None,
            features=schema.to_json(),
            history=History(**history.to_json(), as_of_ms=as_of_ms) if history else None,
            calibration=CalibrationSpec(**model.calibration.to_json(), applied="in_graph"),
            artifacts={
                **CTR_FILES,
                **{user_item_artifact(by): f"user_{by}.parquet" for by in user_item},
            },
            metrics=test_metrics[name],
            valid_metrics=valid_metrics[name],
            split=spec,
            train={
                **json.loads(json.dumps(asdict(config), default=str)),
                "model": name,
                "tuned": tuned[name],
                "rows": len(train_rows),
                "parameters": sum(p.numel() for p in model.parameters()),
                "position_tower": position_tower,
            },
        )
        write_ctr_bundle(
            out,
            "ctr" if name == best else f"ctr-{name}",
            model,
            manifest,
            *ctr_rows.example,
            parity_rows,
            items,
            users,
            user_item,
            cvr.pcvr if cvr is not None else None,
        )
    return CTRResult(
        test_metrics,
        baselines,
        valid_metrics,
        best,
        ctr_rows.sizes,
        curves,
        y_te,
        test_pctr,
        other_calibration,
        tuned,
        cvr,
    )


def with_ctr_setting(config: TrainConfig, setting: dict[str, Any]) -> TrainConfig:
    """``config`` with a searched setting's values (lr, epochs, weight_decay, dim, dropout)."""
    size = {k: setting[k] for k in ("dim", "dropout") if k in setting}
    return replace(
        config,
        ctr_lr=setting.get("lr", config.ctr_lr),
        ctr_epochs=setting.get("epochs", config.ctr_epochs),
        ctr_weight_decay=setting.get("weight_decay", config.ctr_weight_decay),
        ctr_size=replace(config.ctr_size, **size),
    )


def ctr_settings(name: str, config: TrainConfig) -> list[dict[str, Any]]:
    """The settings a CTR model tries: the configured one, then (when searching) the
    alternatives of :data:`CTR_SEARCH` that apply to it."""
    if not config.ctr_search:
        return [{}]
    applies = [s for s in CTR_SEARCH if name != "lr" or not {"dim", "dropout"} & set(s)]
    return [{}, *applies]


def ctr_fit_config(config: TrainConfig) -> FitConfig:
    return FitConfig(
        epochs=config.ctr_epochs,
        lr=config.ctr_lr,
        batch_size=config.ctr_batch_size,
        weight_decay=config.ctr_weight_decay,
        seed=config.seed,
        progress=config.progress,
    )


def ctr_model(
    name: str, schema: FeatureSchema, config: TrainConfig, position_tower: bool
) -> torch.nn.Module:
    """A fresh CTR model of kind ``name`` over ``schema``'s fields, behind a position tower
    (:class:`PositionBias`) when ``position_tower``."""
    n_fields, n_numeric = len(schema.categorical), len(schema.numeric)
    if not position_tower:
        return CTR_MODELS[name](schema.n_buckets, n_fields, n_numeric, config.ctr_size)
    relevance = CTR_MODELS[name](schema.n_buckets, n_fields - 1, n_numeric, config.ctr_size)
    position = [f.name for f in schema.categorical].index("position")
    return PositionBias(relevance, schema.n_buckets, n_fields, position)


def _item_columns(schema: FeatureSchema) -> list[str]:
    cols = ["item_id"] + [f.name for f in schema.categorical_from("item") if f.name != "item_id"]
    cols += [f.name for f in schema.numeric_from("item")]
    # The attributes that key user x item histories: the engine looks them up per item.
    return list(dict.fromkeys(cols + [str(f.by) for f in schema.numeric_from("user_item")]))


def ctr_history(data: Dataset, examples: pl.LazyFrame, config: TrainConfig) -> HistorySpec | None:
    """The histories the CTR models get: the user's own, and per item category when the
    catalogue has one; the prior CTR is the training rows' click rate."""
    if not config.history:
        return None
    by = ("category",) if data.items is not None and "category" in data.items.columns else ()
    prior = (
        examples.filter(pl.col("split") == "train").select(pl.col("label").mean()).collect().item()
    )
    return HistorySpec(by=by, prior=float(prior or 0.0), strength=config.history_strength)


def write_ctr_bundle(
    out: Path,
    name: str,
    model: CalibratedCTR,
    manifest: CTRBundle,
    cat: np.ndarray,
    num: np.ndarray,
    parity_rows: dict[str, np.ndarray],
    items: pl.DataFrame,
    users: pl.DataFrame,
    user_item: dict[str, pl.DataFrame] | None = None,
    pcvr: torch.nn.Module | None = None,
) -> Path:
    """Export, check parity (fails above the tolerance), write the side tables. With ``pcvr``
    (cat, num) -> pCVR, the graph has a second output, ``pcvr``."""

    def write(tmp: Path) -> None:
        example = (torch.from_numpy(cat[:8]), torch.from_numpy(num[:8]))
        # The graph is the serving form (folded weights); parity is against the trained model.
        served, trained, outputs = serving_form(model), model, "pctr"
        if pcvr is not None:
            served, trained, outputs = WithCVR(served, pcvr), WithCVR(model, pcvr), ("pctr", "pcvr")
        export_onnx(served, example, ["cat", "num"], outputs, tmp / "model.onnx")
        manifest.parity_max_abs_error = parity_max_abs_error(
            trained, tmp / "model.onnx", parity_rows
        )
        items.write_parquet(tmp / CTR_FILES["items"])
        users.write_parquet(tmp / CTR_FILES["users"])
        for by, table in (user_item or {}).items():
            table.write_parquet(tmp / manifest.artifacts[user_item_artifact(by)])
        write_metrics_json(tmp, manifest)

    path = write_bundle(out, name, manifest, write)
    log.info("CTR bundle %s (%s)", path, manifest.model_type)
    return path


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
            spec, frame[spec.name].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
        )
    return cat, num


def ctr_schema(
    data: Dataset,
    examples: pl.LazyFrame,
    n_buckets: int,
    numeric_context: tuple[str, ...] = (),
    history: HistorySpec | None = None,
) -> FeatureSchema:
    """Fields: ids, item and user attributes, context columns and position (categorical),
    price and the ``numeric_context`` columns (numeric: log1p of the value clipped at 0,
    standardised on training rows; missing values take the median), then the history
    statistics (:func:`training.history.history_fields`)."""
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
    categorical += [CategoricalField(c, "context") for c in context if c not in numeric_context]
    categorical.append(CategoricalField("position", "context", default="1"))
    sources = [("price", "item")] + [(c, "context") for c in context if c in numeric_context]
    value = {c: pl.col(c).cast(pl.Float64, strict=False) for c, _ in sources}
    # One pass for every numeric field's training mean/std and median (missing = median).
    stats = (
        examples.filter(pl.col("split") == "train")
        .select(
            *[
                e
                for c, _ in sources
                for e in (
                    value[c]
                    .fill_null(value[c].median())
                    .clip(lower_bound=0.0)
                    .log1p()
                    .mean()
                    .alias(f"{c}|mean"),
                    value[c]
                    .fill_null(value[c].median())
                    .clip(lower_bound=0.0)
                    .log1p()
                    .std()
                    .alias(f"{c}|std"),
                    value[c].median().alias(f"{c}|median"),
                )
            ]
        )
        .collect()
        .row(0, named=True)
    )
    numeric = [
        NumericField(
            c,
            source,  # type: ignore[arg-type]
            transform="log1p",
            mean=float(stats[f"{c}|mean"] or 0.0),
            std=float(stats[f"{c}|std"] or 1.0) or 1.0,
            default=float(stats[f"{c}|median"] or 0.0),
        )
        for c, source in sources
    ]
    if history is not None:
        numeric += history_fields(examples, history)
    return FeatureSchema(tuple(categorical), tuple(numeric), n_buckets=n_buckets)


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


def train_profiles(data: Dataset, out: Path, config: TrainConfig) -> dict[str, Any]:
    """User portraits as of the end of the log: RFM scores and segments, activity, top
    category, K-means cluster, plus the users side table's attributes."""
    as_of = data.events.select(pl.col("ts").max()).collect().item()
    items = (
        data.items.lazy() if data.items is not None and "category" in data.items.columns else None
    )
    profiles = user_profiles(data.events, as_of, items=items)
    try:
        segments: KMeansSegments | None = kmeans_segments(profiles, seed=config.seed)
    except NotEnoughData as exc:
        # The engine reads a null cluster as "no segment" and falls back to popularity.
        log.warning("skipping the K-means segments: %s", exc)
        segments = None
    clusters = (
        segments.assignments.rename({"segment": "cluster"})
        if segments is not None
        else pl.DataFrame(
            {"user_id": profiles["user_id"], "cluster": pl.Series([None] * profiles.height)},
            schema={"user_id": pl.String, "cluster": pl.Int32},
        )
    )
    table = profiles.join(clusters, on="user_id", how="left").with_columns(
        pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%z")
    )
    if data.users is not None:
        attrs = [
            c for c, t in data.users.schema.items() if t == pl.String and c not in table.columns
        ]
        table = table.join(data.users.select("user_id", *attrs), on="user_id", how="left")
    summary = {
        "users": table.height,
        "rfm_segments": dict(table.group_by("rfm_segment").len().sort("rfm_segment").iter_rows()),
        "kmeans_k": segments.k if segments is not None else None,
    }
    manifest = ProfilesBundle(
        as_of=as_of.isoformat(),
        artifacts=PROFILES_FILES,
        rfm_segment_rules=dict(RFM_SEGMENT_RULES),
        kmeans=segments.to_dict() if segments is not None else None,
        summary=summary,
    )
    path = write_bundle(
        out,
        "profiles",
        manifest,
        lambda tmp: table.write_parquet(tmp / PROFILES_FILES["profiles"]),
    )
    log.info("profiles bundle %s: %s", path, summary)
    return summary
