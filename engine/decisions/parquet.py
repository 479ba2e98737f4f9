"""Logged ``reachrank.v1.Decision`` records to the decision table of
:mod:`kernels.decision_table` (one row per candidate), written durably as Parquet."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from reachrank.v1 import decisions_pb2

from clients.tensors import from_tensor
from engine.feedback.files import publish
from kernels.decision_table import COLUMNS


def decisions_frame(decisions: Sequence[decisions_pb2.Decision]) -> pl.DataFrame:
    per_decision: dict[str, list] = {c: [] for c in COLUMNS}
    for d in decisions:
        n = len(d.item_ids)
        model = d.models[-1] if d.models else None
        values = {
            "request_id": d.request_id,
            "ts": d.ts_unix_ms,
            "rpc": d.rpc,
            "user_id": d.user_id,
            "context": json.dumps(dict(d.context), sort_keys=True),
            "experiment": d.experiment,
            "variant": d.variant,
            "model": model.name if model else "",
            "model_version": model.version if model else 0,
            "models": ",".join(f"{m.name}:{m.version}" for m in d.models),
            "strategy": d.strategy,
            "exploration": d.exploration,
            "explored": d.explored,
            "propensity_method": d.propensity_method,
            "feature_schema": d.feature_schema,
            "slots": int(sum(1 for p in d.positions if p > 0)),
        }
        for name, value in values.items():
            per_decision[name].extend([value] * n)
        per_decision["candidate"].extend(range(n))
        per_decision["item_id"].extend(d.item_ids)
        per_decision["score"].extend(d.scores)
        per_decision["position"].extend(d.positions)
        per_decision["propensity"].extend(d.propensities)
        per_decision["bid"].extend(d.bids or [0.0] * n)
        per_decision["price"].extend(d.prices or [0.0] * n)
        per_decision["treatment"].extend(d.treatments or [""] * n)
        cat = from_tensor(d.cat) if d.cat.dtype else np.zeros((n, 0), np.int64)
        num = from_tensor(d.num) if d.num.dtype else np.zeros((n, 0), np.float32)
        per_decision["cat"].extend(cat.tolist())
        per_decision["num"].extend(num.tolist())
    frame = pl.DataFrame(
        per_decision,
        schema={
            **{c: pl.String for c in COLUMNS},
            "ts": pl.Int64,
            "model_version": pl.Int64,
            "explored": pl.Boolean,
            "slots": pl.Int32,
            "candidate": pl.Int32,
            "score": pl.Float32,
            "position": pl.Int32,
            "propensity": pl.Float64,
            "bid": pl.Float64,
            "price": pl.Float64,
            "cat": pl.List(pl.Int64),
            "num": pl.List(pl.Float32),
        },
    )
    return frame.with_columns(
        pl.from_epoch("ts", time_unit="ms").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
    )


def write_decisions_parquet(payloads: Sequence[bytes], path: Path) -> int:
    """Write the decisions' rows durably and atomically to ``path``; returns the row count."""
    frame = decisions_frame([decisions_pb2.Decision.FromString(p) for p in payloads])
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    publish(tmp, path)
    return frame.height
