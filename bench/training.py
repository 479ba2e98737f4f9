"""Training benchmarks: retrieval quality on MovieLens 100K and Online Retail, CTR quality on
TalkingData and simulated logs (with the oracle), and the Polars feature pipeline against the
same features in pandas on a 10-million-event simulated log.

Run from the repository root: ``python -m bench.training`` (``--only retrieval,ctr,features``
to run parts; ``--only streaming --streaming-events 10000000,100000000`` trains generated logs
of those sizes with ``reachrank train`` and reports events/s and peak RSS). Prints Markdown tables and writes ``bench/results/training.json``. Needs the
shared data sets at ``../shared/datasets`` and the ``bench`` extra (``implicit``, ``pandas``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from training import metrics
from training.examples import positives
from training.item_stats import item_stats
from training.models.ctr import CTRSize
from training.pipeline import Dataset, SplitPlan, TrainConfig, train_all, train_ctr
from training.profiles import user_profiles
from training.readers import read_events
from training.report import format_params, markdown_table
from training.retrieval import (
    Fitted,
    Interactions,
    RetrievalConfig,
    eval_task,
    evaluate,
    interactions,
    train_retrieval,
)
from training.simulate import GroundTruth, SimulatorConfig, write_simulation

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results" / "training.json"
RETRIEVAL_COLUMNS = ("recall@20", "ndcg@10", "hitrate@10", "coverage")
# The simulated log for the CTR quality bar: more history per user than the demo's default, so
# that a model can learn tastes (the oracle's AUC is the ceiling either way).
CTR_SIM = SimulatorConfig(users=2000, items=400, days=120, seed=7)
# `reachrank simulate --seed 11`: the log the CTR defaults are judged on (issue 13).
DEFAULT_SIM = SimulatorConfig(seed=11)
# What each part of the CTR set-up adds on the simulator (the last row is the bench's own).
CTR_ABLATION: dict[str, dict[str, bool]] = {
    "ids and attributes only": {"history": False, "position_bias": False},
    "+ position tower": {"history": False, "position_bias": True},
    "+ history features": {"history": True, "position_bias": False},
    "+ both": {"history": True, "position_bias": True},
}
FEATURE_SIM_EVENTS = 10_000_000
# (name, folder under the shared data sets, reader format) of the retrieval logs.
RETRIEVAL_DATA: tuple[tuple[str, str, str], ...] = (
    ("movielens-100k", "ml-100k", "movielens"),
    ("online-retail", "online-retail", "online-retail"),
)
BOOTSTRAP = 1000

log = logging.getLogger("bench.training")


# ------------------------------------------------------------------------------ retrieval


def implicit_model(
    kind: str, seed: int
) -> Callable[[Interactions, np.ndarray, np.ndarray], Fitted]:
    """``implicit``'s ALS or BPR as a fit function on (user row, item row) pairs."""

    def fit(data: Interactions, u: np.ndarray, i: np.ndarray) -> Fitted:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        pairs = np.unique(np.stack([u, i], 1), axis=0)
        matrix = sp.csr_matrix(
            (np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
            shape=(data.n_users, data.n_items),
        )
        if kind == "als":
            model = AlternatingLeastSquares(
                factors=64, regularization=0.05, alpha=2.0, iterations=15, random_state=seed
            )
        else:
            model = BayesianPersonalizedRanking(
                factors=64,
                learning_rate=0.01,
                regularization=0.01,
                iterations=100,
                random_state=seed,
            )
        model.fit(matrix, show_progress=False)
        return Fitted(np.asarray(model.user_factors), np.asarray(model.item_factors), 64)

    return fit


def retrieval_quality(name: str, path: Path, fmt: str, config: RetrievalConfig) -> dict[str, Any]:
    """Per-user split (each user's last 20% of positives to test, the 10% before to valid);
    every model fitted on train + valid, scored on test, top-20 over unseen items."""
    start = time.perf_counter()
    events, _ = read_events(path, fmt).collect()
    plan = SplitPlan("per-user", test_fraction=0.2, valid_fraction=0.1)
    pos, spec = plan.label(positives(events.lazy()).with_columns(pl.lit("positive").alias("event")))
    data = interactions(pos.collect().sort("user_id", "item_id"))
    result = train_retrieval(data, None, config, spec)
    rows = {**result.models, **result.baselines}
    test = eval_task(data, ("train", "valid"), "test")
    u, i = data.pairs("train", "valid")
    for kind in ("als", "bpr"):
        t = time.perf_counter()
        try:
            fitted = implicit_model(kind, config.seed)(data, u, i)
        except ImportError as exc:  # the bench extra is missing: say so in the table
            log.warning("implicit unavailable (%s): skipping its %s", exc, kind)
            continue
        rows[f"implicit_{kind}"] = evaluate(fitted, test, config.k)
        log.info(
            "%s implicit %s: %s (%.1f s)",
            name,
            kind,
            rows[f"implicit_{kind}"],
            time.perf_counter() - t,
        )
    return {
        "dataset": name,
        "users": data.n_users,
        "items": data.n_items,
        "test_users": len(test.users),
        "shipped": result.best,
        "valid": result.valid,
        "test": rows,
        "seconds": time.perf_counter() - start,
    }


# Anchors of the default-command bar: what a shop could run without ReachRank, each tuned on
# the same validation part (issue 13: windows of 1-30 days, EASE's lambdas, a small ALS grid).
ANCHOR_WINDOWS_DAYS = (1.0, 3.0, 7.0, 14.0, 30.0)
ANCHOR_ALS_GRID = tuple((alpha, reg) for alpha in (1.0, 5.0, 20.0) for reg in (0.01, 0.1, 1.0))
DEFAULT_BAR = 1.1


def _window_popularity(data: Interactions, parts: tuple[str, ...], days: float) -> Fitted:
    """Positives per item in the last ``days`` before the parts' latest time (ties: all-time),
    computed here rather than with the trainer's code: an independent anchor."""
    _, i = data.pairs(*parts)
    t = data.pair_times(*parts)
    recent = t > t.max() - days * 86_400.0
    counts = np.bincount(i[recent], minlength=data.n_items).astype(np.float64)
    counts += 0.5 * np.bincount(i, minlength=data.n_items) / (len(i) + 1.0)
    return Fitted(np.ones((data.n_users, 1), np.float32), counts.astype(np.float32)[:, None], 1)


def default_anchors(data: Interactions, seed: int) -> dict[str, dict[str, Any]]:
    """popularity, trailing-window popularity, EASE and implicit's ALS, each with its
    parameters chosen by valid Recall@20 (fitted on train), refitted on train + valid and
    scored on test: the same tasks the trainer's report uses."""
    valid = eval_task(data, ("train",), "valid")
    test = eval_task(data, ("train", "valid"), "test")
    config = RetrievalConfig(progress=False)

    def tuned(name: str, grid: Sequence[Any], fit: Callable[[tuple[str, ...], Any], Fitted]):
        scores = {str(g): evaluate(fit(("train",), g), valid, 20)["recall@20"] for g in grid}
        best = max(grid, key=lambda g: scores[str(g)])
        t = time.perf_counter()
        result = {**evaluate(fit(("train", "valid"), best), test, 20), "chosen": str(best)}
        log.info("anchor %s: %s (%.1f s)", name, result, time.perf_counter() - t)
        return {**result, "valid_by_setting": scores}

    def popularity(parts: tuple[str, ...], _: Any) -> Fitted:
        _, i = data.pairs(*parts)
        counts = np.bincount(i, minlength=data.n_items).astype(np.float32)
        return Fitted(np.ones((data.n_users, 1), np.float32), counts[:, None], 1)

    def ease_fit(parts: tuple[str, ...], reg: float) -> Fitted:
        from training.retrieval import ease

        u, i = data.pairs(*parts)
        return ease(data, u, i, config, reg)

    def als_fit(parts: tuple[str, ...], grid: tuple[float, float]) -> Fitted:
        import scipy.sparse as sp
        from implicit.cpu.als import AlternatingLeastSquares

        u, i = data.pairs(*parts)
        matrix = sp.csr_matrix(
            (np.ones(len(u), np.float32), (u, i)), shape=(data.n_users, data.n_items)
        )
        alpha, reg = grid
        model = AlternatingLeastSquares(
            factors=64, regularization=reg, alpha=alpha, iterations=15, random_state=seed
        )
        model.fit(matrix, show_progress=False)
        return Fitted(np.asarray(model.user_factors), np.asarray(model.item_factors), 64)

    return {
        "popularity": tuned("popularity", [None], popularity),
        "popularity_window": tuned(
            "popularity_window",
            list(ANCHOR_WINDOWS_DAYS),
            lambda parts, days: _window_popularity(data, parts, days),
        ),
        "ease": tuned("ease", list(config.ease_lambdas), ease_fit),
        "implicit_als": tuned("implicit_als", list(ANCHOR_ALS_GRID), als_fit),
    }


def default_quality(name: str, path: Path, fmt: str, seed: int = 0) -> dict[str, Any]:
    """``reachrank train`` with no model flags (global time split) against the anchors."""
    read = read_events(path, fmt)
    events, _ = read.collect()
    data = Dataset(
        events=events.lazy(),
        items=read.items.collect() if read.items is not None else None,
        users=read.users.collect() if read.users is not None else None,
    )
    config = TrainConfig(progress=False, seed=seed, retrieval=RetrievalConfig(progress=False))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = train_all(data, Path(tmp), config)
    seconds = time.perf_counter() - start
    shipped = report["chosen"]["retrieval"]
    board = report["leaderboard"]["retrieval"]
    # The trainer's own retrieval split: the same test cut and validation part.
    plan = SplitPlan.plan(data.events, config).for_retrieval(data.events, config)
    pos, _ = plan.label(positives(data.events).with_columns(pl.lit("positive").alias("event")))
    catalogue = data.items["item_id"] if data.items is not None else None
    anchors = default_anchors(
        interactions(pos.collect().sort("user_id", "item_id"), catalogue), seed
    )
    best = max(anchors, key=lambda a: anchors[a]["recall@20"])
    test = report["models"][f"retrieval_{shipped}"]
    return {
        "dataset": name,
        "split": report["split"],
        "shipped": shipped,
        "why": report["why"]["retrieval"],
        "shipped_test": test,
        "leaderboard": board,
        "anchors": anchors,
        "best_anchor": best,
        "ratio": test["recall@20"] / anchors[best]["recall@20"],
        "train_seconds": seconds,
    }


# ------------------------------------------------------------------------------------ CTR


def bootstrap_auc(label: np.ndarray, p: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(std, 2.5th, 97.5th percentile) of the AUC over test rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(label), len(label))
        if 0 < label[idx].sum() < len(idx):
            values.append(metrics.auc(label[idx], p[idx]))
    v = np.asarray(values)
    return float(v.std()), float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))


def ctr_quality(name: str, data: Dataset, config: TrainConfig) -> dict[str, Any]:
    """Every CTR model on one global time split; AUC with a bootstrap spread."""
    start = time.perf_counter()
    plan = SplitPlan.plan(data.events, config)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_ctr(data, plan, Path(tmp), config)
    rows: dict[str, dict[str, float]] = {}
    for model, m in result.models.items():
        std, lo, hi = bootstrap_auc(result.test_label, result.test_pctr[model])
        rows[model] = {**m, "auc_std": std, "auc_lo": lo, "auc_hi": hi}
        if "oracle_auc" in m:
            rows[model]["auc_vs_oracle"] = m["auc"] / m["oracle_auc"]
    return {
        "dataset": name,
        "split": result.sizes,
        "positives_test": int(result.test_label.sum()),
        "shipped": result.best,
        "test": rows,
        "baselines": result.baselines,
        "other_calibration": result.other_calibration,
        "tuned": result.tuned,
        "seconds": time.perf_counter() - start,
    }


def simulator_data(directory: Path, config: SimulatorConfig = CTR_SIM) -> Dataset:
    write_simulation(directory, config)
    return Dataset(
        events=pl.scan_parquet(directory / "events.parquet"),
        items=pl.read_parquet(directory / "items.parquet"),
        users=pl.read_parquet(directory / "users.parquet"),
        ground_truth=GroundTruth.load(directory),
    )


# ------------------------------------------------------------------------------- features


def synthetic_log(n_events: int, seed: int = 0) -> pl.DataFrame:
    """A 10M-row event log in the event schema: impressions, clicks and purchases of 200k
    users on 20k items over 90 days (shape as the simulator's, generated directly: the
    simulator's slate sampling is quadratic in the catalogue and would dominate the bench)."""
    rng = np.random.default_rng(seed)
    kinds = np.array(["impression", "click", "purchase"])
    event = kinds[rng.choice(3, n_events, p=[0.85, 0.12, 0.03])]
    price = np.round(np.exp(rng.normal(3.5, 1.0, n_events)), 2)
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
    return pl.DataFrame(
        {
            "user_id": pl.Series(rng.integers(0, 200_000, n_events)).cast(pl.String),
            "item_id": pl.Series(rng.integers(0, 20_000, n_events)).cast(pl.String),
            "ts": pl.Series(start + rng.integers(0, 90 * 86_400_000_000, n_events)).cast(
                pl.Datetime("us", "UTC")
            ),
            "event": event,
            "value": np.where(event == "purchase", price, np.nan),
            "price": price,
            "position": rng.integers(1, 9, n_events).astype(np.int32),
            "request_id": pl.Series(rng.integers(0, n_events // 8, n_events)).cast(pl.String),
        }
    ).with_columns(pl.col("value").fill_nan(None))


def polars_features(path: Path, as_of: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The trainer's own pipeline: user profiles (RFM, activity) and item statistics."""
    events = pl.scan_parquet(path)
    return user_profiles(events, as_of), item_stats(events, as_of)


def pandas_features(path: Path, as_of: datetime) -> tuple[Any, Any]:
    """The same user RFM/activity columns and item counts/CTR in pandas (vectorised groupbys)."""
    import pandas as pd

    df = pd.read_parquet(path)
    df = df[df["ts"] <= pd.Timestamp(as_of)]
    engaged = df["event"].isin(["click", "purchase", "rating"])
    day = pd.Timedelta(days=1)
    for e in ("impression", "click", "purchase", "rating"):
        df[f"is_{e}"] = (df["event"] == e).astype("int64")
    df["purchase_value"] = df["value"].where(df["event"] == "purchase", 0.0).fillna(0.0)
    users = df.groupby("user_id").agg(
        first_seen=("ts", "min"),
        last_seen=("ts", "max"),
        monetary=("purchase_value", "sum"),
        n_events=("ts", "size"),
        **{f"n_{e}": (f"is_{e}", "sum") for e in ("impression", "click", "purchase", "rating")},
    )
    eng = df[engaged]
    last_engaged = eng.groupby("user_id")["ts"].max()
    frequency = (
        eng.groupby("user_id")["request_id"].nunique()
        + eng["request_id"].isna().groupby(eng["user_id"]).sum()
    )
    users["frequency"] = frequency.reindex(users.index).fillna(0).astype("int64")
    users["recency_days"] = (pd.Timestamp(as_of) - last_engaged.reindex(users.index)) / day
    users["days_since_first_seen"] = (pd.Timestamp(as_of) - users["first_seen"]) / day
    eligible = users["frequency"] > 0
    for col, sign, out in (
        ("recency_days", -1, "r_score"),
        ("frequency", 1, "f_score"),
        ("monetary", 1, "m_score"),
    ):
        value = (sign * users[col]).where(eligible)
        below = value.rank(method="min") - 1
        users[out] = (1 + np.floor(5 * below / eligible.sum())).clip(1, 5).where(eligible)
    items = df.groupby("item_id").agg(
        n_events=("ts", "size"),
        n_users=("user_id", "nunique"),
        revenue=("purchase_value", "sum"),
        first_seen=("ts", "min"),
        last_seen=("ts", "max"),
        **{f"n_{e}": (f"is_{e}", "sum") for e in ("impression", "click", "purchase", "rating")},
    )
    items["ctr"] = (
        items["n_click"].clip(upper=items["n_impression"]) / items["n_impression"]
    ).where(items["n_impression"] > 0)
    return users.sort_index(), items.sort_index()


def feature_speed(n_events: int, repeats: int = 3) -> dict[str, Any]:
    """Median wall time of the Polars and pandas pipelines (read + features), same file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        t = time.perf_counter()
        log_frame = synthetic_log(n_events)
        log_frame.write_parquet(path)
        as_of = log_frame["ts"].max()
        del log_frame
        generate = time.perf_counter() - t
        timings: dict[str, list[float]] = {"polars": [], "pandas": []}
        outputs: dict[str, Any] = {}
        for _ in range(repeats):
            for name, fn in (("polars", polars_features), ("pandas", pandas_features)):
                t = time.perf_counter()
                outputs[name] = fn(path, as_of)
                timings[name].append(time.perf_counter() - t)
        (pl_users, pl_items), (pd_users, pd_items) = outputs["polars"], outputs["pandas"]
        # Same numbers, or the comparison means nothing.
        for col in ("frequency", "monetary", "n_events", "n_click", "recency_days"):
            np.testing.assert_allclose(
                pl_users[col].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                pd_users[col].to_numpy(dtype=float),
                rtol=1e-9,
                atol=1e-9,
                err_msg=col,
            )
        for col in ("r_score", "f_score", "m_score"):
            # Scores rank floats: sums that differ in the last bit (summation order) can break
            # a tie differently, so allow a handful of rows out of millions.
            a = pl_users[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
            b = pd_users[col].to_numpy(dtype=float)
            differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            assert differ.mean() < 1e-4, (col, int(differ.sum()))
        for col in ("n_impression", "n_users", "revenue", "ctr"):
            np.testing.assert_allclose(
                pl_items[col].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                pd_items[col].to_numpy(dtype=float),
                rtol=1e-9,
                err_msg=col,
            )
    return {
        "events": n_events,
        "users": pl_users.height,
        "items": pl_items.height,
        "generate_seconds": generate,
        "polars_seconds": float(np.median(timings["polars"])),
        "pandas_seconds": float(np.median(timings["pandas"])),
        "all_seconds": timings,
    }


# -------------------------------------------------------------------------------- tables


def retrieval_table(result: dict[str, Any]) -> str:
    rows = []
    for model, m in result["test"].items():
        label = f"{model} (shipped)" if model == result["shipped"] else model
        rows.append([label, *(m.get(c) for c in RETRIEVAL_COLUMNS)])
    return markdown_table(("model", *RETRIEVAL_COLUMNS), rows)


def default_table(result: dict[str, Any]) -> str:
    """The default command's leaderboard (valid and test Recall@20 with intervals), then the
    bench's own anchors on the same split."""
    rows = []
    for row in result["leaderboard"]:
        label = row["name"] + (" (shipped)" if row["shipped"] else "")
        if row["role"] == "baseline":
            label = f"baseline: {row['name']}"
        cells = []
        for part in ("valid", "test"):
            m = row.get(part)
            cells.append(
                f"{m['recall@20']:.4f} [{m['recall@20_ci'][0]:.4f}, {m['recall@20_ci'][1]:.4f}]"
                if m
                else ""
            )
        test = row.get("test") or {}
        rows.append([label, format_params(row.get("params", {})), *cells, test.get("ndcg@10")])
    for name, m in result["anchors"].items():
        rows.append([f"anchor: {name}", m["chosen"], "", f"{m['recall@20']:.4f}", m["ndcg@10"]])
    return markdown_table(
        (
            "model",
            "tuned on valid",
            "valid recall@20 [95%]",
            "test recall@20 [95%]",
            "test ndcg@10",
        ),
        rows,
    )


def ctr_table(result: dict[str, Any]) -> str:
    rows = []
    for model, m in result["test"].items():
        label = f"{model} (shipped)" if model == result["shipped"] else model
        spread = f"{m['auc']:.4f} ± {m['auc_std']:.4f} [{m['auc_lo']:.4f}, {m['auc_hi']:.4f}]"
        ratio = m.get("auc_vs_oracle")
        alt = result["other_calibration"][model]
        rows.append(
            [label, spread, m["logloss"], m["ece"], alt["ece"], ratio if ratio is not None else ""]
        )
    for name, m in result["baselines"].items():
        rows.append([f"baseline: {name}", f"{m['auc']:.4f}", m["logloss"], m["ece"], "", ""])
    alt_name = next(iter(result["other_calibration"].values()))["calibration"]
    return markdown_table(
        (
            "model",
            "AUC ± bootstrap std [95%]",
            "logloss",
            "ECE (Platt)",
            f"ECE ({alt_name})",
            "AUC / oracle",
        ),
        rows,
    )


def ablation_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set-up: every model's test AUC, the best's share of the oracle's, the worst ECE."""
    rows = []
    for variant, r in results.items():
        test = r["test"]
        best = max(test, key=lambda m: test[m]["auc"])
        rows.append(
            {
                "variant": variant,
                "auc": {m: v["auc"] for m, v in test.items()},
                "best": best,
                "auc_vs_oracle": test[best].get("auc_vs_oracle"),
                "worst_ece": max(v["ece"] for v in test.values()),
            }
        )
    return rows


def ablation_table(rows: list[dict[str, Any]]) -> str:
    models = list(rows[0]["auc"]) if rows else []
    return markdown_table(
        ("set-up", *(f"{m} AUC" for m in models), "best / oracle", "worst ECE (Platt)"),
        [
            [
                r["variant"],
                *(r["auc"][m] for m in models),
                f"{r['auc_vs_oracle']:.4f} (`{r['best']}`)",
                r["worst_ece"],
            ]
            for r in rows
        ],
    )


COMMAND = "python -m bench.training"
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTIONS = ("## Training quality", "## Feature pipeline speed")


def quality_bars(results: dict[str, Any]) -> list[str]:
    """The issue's quality bars, met or not, with the measured figures."""
    lines = ["### Quality bars", ""]
    for name, r in results.get("retrieval", {}).items():
        shipped = r["test"][r["shipped"]]
        rivals = [m for m in ("ease", "implicit_als", "implicit_bpr", "item_knn") if m in r["test"]]
        for metric in ("recall@20", "ndcg@10"):
            best = max(rivals, key=lambda m: r["test"][m][metric])
            ok = shipped[metric] >= r["test"][best][metric]
            lines.append(
                f"- {name} {metric}: shipped `{r['shipped']}` {shipped[metric]:.4f} vs best "
                f"baseline `{best}` {r['test'][best][metric]:.4f}: {'met' if ok else 'MISSED'}"
            )
    for name, r in results.get("default", {}).items():
        best = r["anchors"][r["best_anchor"]]["recall@20"]
        shipped = r["shipped_test"]["recall@20"]
        lines.append(
            f"- {name} default command recall@20 >= {DEFAULT_BAR}x the best anchor: shipped "
            f"`{r['shipped']}` {shipped:.4f} vs `{r['best_anchor']}` {best:.4f} = "
            f"{shipped / best:.2f}x: " + ("met" if shipped >= DEFAULT_BAR * best else "MISSED")
        )
    default = results.get("ctr_default", {}).get("simulator")
    if default:
        m = default["test"][default["shipped"]]
        ok = m["auc_vs_oracle"] >= 0.97 and m["ece"] < 0.01
        lines.append(
            f"- default simulation, default command: shipped `{default['shipped']}` AUC "
            f"{m['auc']:.4f} / {m['oracle_auc']:.4f} = {100 * m['auc_vs_oracle']:.1f}% of the "
            f"oracle's (goal 97%), ECE {m['ece']:.4f} (goal < 0.01): " + ("met" if ok else "MISSED")
        )
    sim = results.get("ctr", {}).get("simulator")
    if sim:
        best = max(sim["test"], key=lambda m: sim["test"][m]["auc"])
        m = sim["test"][best]
        ratio_ok = m["auc_vs_oracle"] >= 0.97
        lines.append(
            f"- simulator AUC >= 97% of the oracle's: best `{best}` {m['auc']:.4f} / "
            f"{m['oracle_auc']:.4f} = {100 * m['auc_vs_oracle']:.1f}%: "
            + ("met" if ratio_ok else f"MISSED by {100 * (0.97 - m['auc_vs_oracle']):.1f} points")
        )
        eces = {k: v["ece"] for k, v in sim["test"].items()}
        lines.append(
            f"- simulator ECE < 0.01 after calibration: {max(eces.values()):.4f} at worst "
            f"(`{max(eces, key=eces.get)}`): {'met' if max(eces.values()) < 0.01 else 'MISSED'}"
        )
    return [*lines, ""]


def benchmarks_sections(results: dict[str, Any]) -> dict[str, str]:
    """The two BENCHMARKS.md sections, rendered from ``bench/results/training.json``."""
    quality = [
        SECTIONS[0],
        "",
        f"`{COMMAND} --only default,ctr_default,retrieval,ctr` (results: `bench/results/training.json`). "
        "Same split for every row of a table. Machine: 2 shared CPU cores, Python "
        f"{results.get('machine', {}).get('python', '3.11')}; measured while other "
        "benchmarks shared the cores, so times are inflated (comparisons within a table hold).",
        "",
        "Retrieval models: `trending` = exponentially decayed popularity (half-life tuned on "
        "validation; iALS breaks its near-ties), `mf` = MF-BPR (64-d, Adam, 30 epochs), `ials` "
        "= implicit ALS (64-d, 15 iterations), `ease` = EASE (lambda, then a half-life for its "
        "co-occurrences, tuned on validation), `ease_ials` and `trending_ease` = EASE plus "
        "iALS / plus trending in one inner product (concatenated tables, weight tuned on "
        "validation), `sasrec` = SASRec-style causal self-attention over the user's last 50 "
        "items (64-d, 2 blocks, full-softmax next-item loss, epochs tuned on validation within "
        "half of its 30% of `--budget-minutes`, the refit within the rest; its user tower is served on live clicks); `popularity`, "
        "`popularity_window` (trailing window tuned on validation), `popularity_decay` and "
        "`item_knn` (cosine over co-occurrence, 100 neighbours, a co-occurrence half-life "
        "tuned on validation) are baselines. `(shipped)` marks the model `reachrank train` ships as `retrieval`: the "
        "best on validation Recall@20, or the simplest candidate shown equivalent to it (its "
        "deficit, at the 95% paired bootstrap bound over valid users, within 2% of the best). "
        "Recall@20 is hits / |test items| (Microsoft Recommenders' definition, "
        "which a user with more than 20 test items cannot reach 1 on); that is a likely reason "
        "the absolute Recall@20 here is below the issue's orientation figures (EASE .236, ALS "
        ".220) while NDCG@10 is above them (EASE .199 vs .192); the orderings agree.",
        "",
    ]
    for name, r in results.get("default", {}).items():
        split = r["split"]
        quality += [
            f"### Default command: {name}",
            "",
            f"`reachrank train` with no model flags: global time split, test after "
            f"{split['test_cut'][:10]} ({split['test_fraction']:.0%} of the events), retrieval "
            f"tuned on the {split.get('retrieval_valid_fraction', split['valid_fraction']):.0%} "
            "just before it, every candidate refitted on train + validation and scored on test "
            f"(trained in {r['train_seconds']:.0f} s). Shipped: `{r['shipped']}`, {r['why']}. "
            "The anchors are computed by the bench itself on the same split and validation "
            "part: popularity (train + validation counts), trailing-window popularity (window "
            "of 1/3/7/14/30 days chosen on validation), EASE (lambda chosen on validation) and "
            "`implicit`'s ALS (64 factors; alpha 1/5/20 x regularisation 0.01/0.1/1 chosen on "
            "validation). Intervals: 95% bootstrap over the evaluated users.",
            "",
            default_table(r),
            "",
        ]
    for r in results.get("ctr_default", {}).values():
        sim = r["simulator"]
        sizes = ", ".join(f"{k} {v['rows']:,}" for k, v in sorted(r["split"].items()))
        tuned = "; ".join(
            f"`{n}` {format_params(t['setting']) or 'defaults'} (of {len(t['valid_logloss_by_setting'])})"
            for n, t in r.get("tuned", {}).items()
        )
        quality += [
            "### Default command: CTR on the default simulation",
            "",
            f"`reachrank simulate --seed 11` ({sim['users']} users, {sim['items']} items, "
            f"{sim['days']} days), then `reachrank train` with no flags (its CTR part, "
            f"{r['seconds']:.0f} s): global time split ({sizes} impressions), all four CTR "
            "models with history features and the position tower, each trying its settings on "
            "validation within its share of `--budget-minutes` (kept by valid logloss: "
            f"{tuned}), Platt-calibrated on validation in the graph; the lowest valid logloss "
            "ships."
            + (
                " The budget ran out before any alternative setting was tried (every model "
                "trains once at its defaults first; the cores were shared with other jobs)."
                if all(len(t["valid_logloss_by_setting"]) == 1 for t in r.get("tuned", {}).values())
                else ""
            ),
            "",
            ctr_table(r),
            "",
        ]
    for name, r in results.get("retrieval", {}).items():
        quality += [
            f"### Retrieval: {name}",
            "",
            f"{r['users']} users, {r['items']} items, {r['test_users']} test users. Implicit "
            "feedback (every rating / purchase is a positive), per-user split: each user's last "
            "20% of positives is test, the 10% before it validation (EASE's lambda and the "
            "shipped model are chosen there); every model is then refitted on train + validation "
            "and ranks the top 20 of the items the user has not consumed. `implicit_*` are the "
            "`implicit` 0.7 library's ALS (64 factors) and BPR (64 factors, 100 iterations).",
            "",
            retrieval_table(r),
            "",
            *([r["note"], ""] if r.get("note") else []),
        ]
    for name, r in results.get("ctr", {}).items():
        sim = r.get("simulator")
        about = (
            f"Simulated log ({sim['users']} users, {sim['items']} items, {sim['days']} days, "
            f"seed {sim['seed']}); `oracle` is the simulator's true click probability."
            if sim
            else f"TalkingData sample; {r['positives_test']} positives in the test part, hence "
            "the bootstrap spread (1,000 resamples of the test rows)."
        )
        sizes = ", ".join(f"{k} {v['rows']:,}" for k, v in sorted(r["split"].items()))
        quality += [
            f"### CTR: {name}",
            "",
            f"{about} Global time split ({sizes} impressions). Calibrated on validation "
            "(Platt, in the graph); the isotonic column is the same model with isotonic "
            "calibration instead. ECE: 10 equal-width bins.",
            "",
            ctr_table(r),
            "",
        ]
        if sim:
            quality += [
                "Features: user and item ids, item category, user attributes, device and "
                "position (hashed), price, and the user's history before each impression "
                "(impressions, clicks and smoothed CTR, overall and in the item's category; "
                "`training.history`). The models are `examination(position) x relevance` "
                "(`PositionBias`): the truth multiplies an examination probability by a "
                "relevance, which no logit-additive model can express. What each part adds, "
                "same log and split:",
                "",
            ]
        rows = results.get("ctr_ablation", {}).get(name)
        if rows:
            quality += [ablation_table(rows), ""]
        elif not sim:
            quality += [
                "No history features here (the reader stamps each download with its click's "
                "time, so a past label would look known too early) and one position only.",
                "",
            ]
    quality += quality_bars(results)
    speed = [SECTIONS[1], ""]
    f = results.get("features")
    if f:
        speed += [
            f"`{COMMAND} --only features`: read a {f['events']:,}-event Parquet log "
            f"({f['users']:,} users, {f['items']:,} items) and compute the user profiles (RFM "
            "features and 1-5 scores, activity counts) and item statistics (counts, distinct "
            "users, revenue, CTR): the trainer's Polars lazy pipeline (`training.profiles."
            "user_profiles`, `training.item_stats.item_stats`) vs the same columns in pandas "
            "(vectorised groupbys; the bench checks both give the same numbers). Median of 3.",
            "",
            markdown_table(
                ("pipeline", "seconds", "speed-up"),
                [
                    [
                        "Polars (lazy)",
                        f["polars_seconds"],
                        f"{f['pandas_seconds'] / f['polars_seconds']:.1f}x",
                    ],
                    ["pandas", f["pandas_seconds"], "1.0x"],
                ],
            ),
            "",
        ]
    return {SECTIONS[0]: "\n".join(quality), SECTIONS[1]: "\n".join(speed)}


def update_benchmarks(results: dict[str, Any], path: Path = BENCHMARKS) -> None:
    """Replace (or append) this bench's sections of BENCHMARKS.md, keeping all others.

    Within a section, a ``###`` subsection (and a quality-bar line) that ``results`` has
    nothing for is kept as it stands: parts run separately (``--only``, ``--ctr-data``) and
    the results file is not committed, so a partial run must not erase the tables it did not
    remeasure.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for heading, body in benchmarks_sections(results).items():
        lines = text.split("\n")
        if heading in lines:
            start = lines.index(heading)
            end = next(
                (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
            )
            merged = merge_section(lines[start:end], body.rstrip("\n").split("\n"))
            lines[start:end] = [*merged, ""]
            text = "\n".join(lines)
        else:
            text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    path.write_text(text)


def _subsections(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(lines before the first ``###``, {``###`` heading: its lines without trailing blanks})."""
    head: list[str] = []
    parts: dict[str, list[str]] = {}
    current = head
    for line in lines:
        if line.startswith("### "):
            current = parts.setdefault(line, [line])
        else:
            current.append(line)
    while head and not head[-1].strip():
        head.pop()
    for part in parts.values():
        while part and not part[-1].strip():
            part.pop()
    return head, parts


def _bar_key(line: str) -> str:
    """What a quality-bar line is about: the text before its first colon."""
    return line.split(":")[0]


def _merge_bars(old: list[str], new: list[str]) -> list[str]:
    """Quality-bar lines: the new ones, plus the old ones about things not remeasured."""
    key = _bar_key
    fresh = {key(line) for line in new if line.startswith("- ")}
    kept = [line for line in old if line.startswith("- ") and key(line) not in fresh]
    bars = [line for line in new if line.startswith("- ")]
    # In the old order: the kept lines keep their place relative to the remeasured ones.
    order = [key(line) for line in old if line.startswith("- ")]
    ranked = sorted(
        kept + bars, key=lambda line: order.index(key(line)) if key(line) in order else len(order)
    )
    return [new[0], "", *ranked]


def merge_section(old: list[str], new: list[str]) -> list[str]:
    """A ``##`` section rendered from fresh results, merged into its current text."""
    _, old_parts = _subsections(old)
    new_head, new_parts = _subsections(new)
    if len(new_head) <= 1 and not new_parts:
        # Nothing measured for this section: keep it as it is.
        kept = list(old)
        while kept and not kept[-1].strip():
            kept.pop()
        return kept
    out = list(new_head)
    for heading in dict.fromkeys([*old_parts, *new_parts]):
        part = new_parts.get(heading, old_parts.get(heading, []))
        if heading == "### Quality bars" and heading in old_parts and heading in new_parts:
            part = _merge_bars(old_parts[heading], new_parts[heading])
        out += ["", *part]
    return out


# ------------------------------------------------------------------------------ streaming

# The generated log's shape for the streaming bench: users and items stay fixed as events grow,
# because the retrieval models' dense user x item matrices (item-kNN, EASE) scale with them.
STREAMING_USERS, STREAMING_ITEMS = 20_000, 2_000


def streaming_training(
    n_events: int, root: Path, in_memory: bool = False, partition_events: int = 1_000_000
) -> dict[str, Any]:
    """`reachrank train` (LR, one epoch, trending retrieval) on a generated log of
    ``n_events``, in a child process: wall time, events/s and the child's peak RSS."""
    import os
    import subprocess
    import sys

    from training.streaming_synth import GeneratedLog, write_generated_log

    log_dir = root / f"log-{n_events}"
    if not log_dir.exists():
        write_generated_log(
            log_dir,
            GeneratedLog(events=n_events, users=STREAMING_USERS, items=STREAMING_ITEMS, days=60),
        )
    rows = int(pl.scan_parquet(log_dir / "*.parquet").select(pl.len()).collect().item())
    out = root / f"repo-{n_events}-{'mem' if in_memory else 'stream'}"
    command = [
        sys.executable, "-c", "from clients.cli import main; main()", "train",
        "--events", str(log_dir), "--out", str(out), "--ctr-model", "lr", "--ctr-epochs", "1",
        "--retrieval-models", "trending", "--budget-minutes", "5", "--quiet",
        *(["--in-memory"] if in_memory else ["--partition-events", str(partition_events)]),
    ]  # fmt: skip
    errors = root / f"{out.name}.stderr"
    start = time.perf_counter()
    with errors.open("w") as stderr:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        # This child's own peak RSS (RUSAGE_CHILDREN would be the largest child's so far).
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * 1024
    result: dict[str, Any] = {
        "events": rows,
        "path": "in-memory" if in_memory else "streaming",
        "partition_events": None if in_memory else partition_events,
        "seconds": round(seconds, 1),
        "events_per_s": round(rows / seconds),
        "peak_rss_mb": round(peak / 2**20),
        "log_parquet_mb": round(sum(f.stat().st_size for f in log_dir.glob("*.parquet")) / 2**20),
        "ok": returncode == 0,
    }
    if returncode:
        lines = errors.read_text().strip().splitlines()
        result["error"] = lines[-1] if lines else f"exit status {returncode}"
    else:
        report = json.loads((out / "report.json").read_text())
        result["ctr_auc"] = report["models"]["ctr_lr"]["auc"]
    return result


def streaming_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(
        ("events", "path", "seconds", "events/s", "peak RSS (MB)", "CTR AUC"),
        [
            [
                f"{r['events']:,}",
                r["path"],
                r["seconds"],
                f"{r['events_per_s']:,}",
                r["peak_rss_mb"],
                round(r["ctr_auc"], 4) if r.get("ok") else f"failed: {r.get('error', '')}",
            ]
            for r in rows
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="default,ctr_default,retrieval,ctr,features")
    parser.add_argument("--feature-events", type=int, default=FEATURE_SIM_EVENTS)
    parser.add_argument(
        "--streaming-events",
        default="10000000",
        help="Comma-separated log sizes for --only streaming (e.g. 10000000,100000000).",
    )
    parser.add_argument(
        "--streaming-in-memory",
        action="store_true",
        help="Also train each --streaming-events log on the in-memory path, for the ratio.",
    )
    parser.add_argument(
        "--streaming-dir",
        type=Path,
        default=None,
        help="Where the generated logs and work dirs go (default: a temporary directory).",
    )
    parser.add_argument("--ctr-data", default="talkingdata,simulator")
    parser.add_argument("--retrieval-data", default="movielens-100k,online-retail")
    parser.add_argument(
        "--write-benchmarks",
        action="store_true",
        help="Only rewrite BENCHMARKS.md's training sections from the saved results.",
    )
    args = parser.parse_args(argv)
    if args.write_benchmarks:
        update_benchmarks(json.loads(RESULTS.read_text()))
        return
    parts = set(args.only.split(","))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("numba").setLevel(logging.WARNING)
    torch.set_num_threads(2)
    results: dict[str, Any] = {}
    results["machine"] = {"python": platform.python_version(), "cpus": torch.get_num_threads()}
    # Bigger BPR batches (and a matching step size): 4x fewer Python-level steps.
    retrieval_config = RetrievalConfig(mf_batch_size=4096, mf_lr=0.02, progress=False)
    retrieval_data = [d for d in RETRIEVAL_DATA if d[0] in args.retrieval_data.split(",")]
    if "default" in parts:
        results["default"] = {}
        for name, folder, fmt in retrieval_data:
            r = default_quality(name, DATASETS / folder, fmt)
            results["default"][name] = r
            print(f"\n### Default command: {name}\n\n{default_table(r)}\n")
            _save(results)
    if "ctr_default" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            # `reachrank train` on `reachrank simulate --seed 11`, no flags: the CTR part.
            r = ctr_quality("simulator", simulator_data(Path(tmp), DEFAULT_SIM), TrainConfig())
        r["simulator"] = DEFAULT_SIM.__dict__
        results["ctr_default"] = {"simulator": r}
        print(f"\n### Default command: CTR on the default simulation\n\n{ctr_table(r)}\n")
        _save(results)
    if "retrieval" in parts:
        results["retrieval"] = {}
        for name, folder, fmt in retrieval_data:
            r = retrieval_quality(name, DATASETS / folder, fmt, retrieval_config)
            results["retrieval"][name] = r
            print(
                f"\n### Retrieval: {name} ({r['users']} users, {r['items']} items, "
                f"{r['test_users']} test users)\n\n{retrieval_table(r)}\n"
            )
            _save(results)
    if "ctr" in parts:
        results["ctr"] = {}
        ctr_config = TrainConfig(
            ctr_models=("lr", "fm", "deepfm", "dcn"),
            ctr_size=CTRSize(dim=8, mlp=(64, 32)),
            ctr_epochs=6,
            ctr_lr=0.005,
            n_buckets=1 << 17,
            progress=False,
        )
        ctr_data = set(args.ctr_data.split(","))
        if "talkingdata" in ctr_data:
            talking = read_events(
                DATASETS / "talkingdata-adtracking" / "train_sample.csv", "talkingdata"
            )
            events, _ = talking.collect()
            # No histories: the reader stamps a download with its click's time, not with the
            # moment it was attributed, so a past label would look known too early.
            r = ctr_quality(
                "talkingdata", Dataset(events=events.lazy()), replace(ctr_config, history=False)
            )
            results["ctr"]["talkingdata"] = r
            print(
                f"\n### CTR: TalkingData ({r['positives_test']} test positives)\n\n{ctr_table(r)}\n"
            )
            _save(results)
        if "simulator" in ctr_data:
            with tempfile.TemporaryDirectory() as tmp:
                data = simulator_data(Path(tmp))
                r = ctr_quality("simulator", data, ctr_config)
                r["simulator"] = CTR_SIM.__dict__
                results["ctr"]["simulator"] = r
                print(f"\n### CTR: simulator\n\n{ctr_table(r)}\n")
                ablation = {}
                for variant, flags in CTR_ABLATION.items():
                    same = all(getattr(ctr_config, k) == v for k, v in flags.items())
                    ablation[variant] = (
                        r if same else ctr_quality("simulator", data, replace(ctr_config, **flags))
                    )
                results["ctr_ablation"] = {"simulator": ablation_rows(ablation)}
                print(f"\n{ablation_table(results['ctr_ablation']['simulator'])}\n")
            _save(results)
    if "features" in parts:
        r = feature_speed(args.feature_events)
        results["features"] = r
        print(
            f"\n### Feature pipeline, {r['events']:,} events\n\n"
            + markdown_table(
                ("pipeline", "seconds (median of 3)"),
                [
                    ["Polars (lazy, trainer's)", r["polars_seconds"]],
                    ["pandas", r["pandas_seconds"]],
                ],
            )
        )
        _save(results)
    if "streaming" in parts:
        rows = []
        with tempfile.TemporaryDirectory(dir=args.streaming_dir) as tmp:
            for n in sorted(int(v) for v in args.streaming_events.split(",")):
                rows.append(streaming_training(n, Path(tmp)))
                print(f"\n### Training beyond memory\n\n{streaming_table(rows)}\n", flush=True)
                if args.streaming_in_memory:
                    rows.append(streaming_training(n, Path(tmp), in_memory=True))
                    print(f"\n{streaming_table(rows)}\n", flush=True)
                results["streaming"] = {"runs": rows}
                _save(results)
    update_benchmarks(json.loads(RESULTS.read_text()))


def _save(results: dict[str, Any]) -> None:
    """Merge into the results file (parts may run as separate processes), then write it."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key, value in results.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    RESULTS.write_text(json.dumps(current, indent=2, default=str))


if __name__ == "__main__":
    main()
