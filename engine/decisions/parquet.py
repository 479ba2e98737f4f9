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
from kernels.decision_table import DECISION_COLUMNS


def _matrix_column(name: str, blocks: list[np.ndarray], dtype: pl.DataType) -> pl.Series:
    """One list per row from per-decision [n, width] blocks: one 2-D array when the widths
    agree (the usual case: one schema), built without a Python list per row."""
    widths = {b.shape[1] for b in blocks}
    if len(widths) == 1 and blocks:
        stacked = np.concatenate(blocks)
        width = widths.pop()
        if width == 0:  # no features (a Plan, or Recommend without a CTR model): null
            return pl.Series(name, [None] * len(stacked), pl.List(dtype))
        return pl.Series(name, stacked).cast(pl.List(dtype))
    return pl.Series(name, [row for b in blocks for row in b.tolist()], pl.List(dtype))


def decisions_frame(decisions: Sequence[decisions_pb2.Decision]) -> pl.DataFrame:
    """One row per candidate: the decision's columns repeated, then the candidate's."""
    counts = np.array([len(d.item_ids) for d in decisions], dtype=np.int64)
    per_decision: dict[str, list] = {c: [] for c in DECISION_COLUMNS}
    cat_blocks, num_blocks = [], []
    for d, n in zip(decisions, counts.tolist(), strict=True):
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
            "slots": sum(1 for p in d.positions if p > 0),
        }
        for name, value in values.items():
            per_decision[name].append(value)
        cat_blocks.append(from_tensor(d.cat) if d.cat.dtype else np.zeros((n, 0), np.int64))
        num_blocks.append(from_tensor(d.num) if d.num.dtype else np.zeros((n, 0), np.float32))

    def column(field: str, dtype: type, fill: object) -> np.ndarray | list:
        parts = [
            getattr(d, field) or [fill] * n for d, n in zip(decisions, counts.tolist(), strict=True)
        ]
        if dtype is str:
            return [x for part in parts for x in part]
        return np.concatenate([np.asarray(p, dtype=dtype) for p in parts]) if parts else []

    frame = pl.DataFrame(
        {name: values for name, values in per_decision.items()},
        schema={
            **{c: pl.String for c in DECISION_COLUMNS},
            "ts": pl.Int64,
            "model_version": pl.Int64,
            "explored": pl.Boolean,
            "slots": pl.Int32,
        },
    )
    frame = frame.select(pl.all().gather(np.repeat(np.arange(len(decisions)), counts)))
    candidates = pl.DataFrame(
        {
            "candidate": np.concatenate([np.arange(n) for n in counts.tolist()] or [[]]),
            "item_id": column("item_ids", str, ""),
            "score": column("scores", np.float32, 0.0),
            "position": column("positions", np.int32, 0),
            "propensity": column("propensities", np.float64, 0.0),
            "bid": column("bids", np.float64, 0.0),
            "price": column("prices", np.float64, 0.0),
            "treatment": column("treatments", str, ""),
        },
        schema_overrides={"candidate": pl.Int32, "item_id": pl.String, "treatment": pl.String},
    ).with_columns(
        _matrix_column("cat", cat_blocks, pl.Int64), _matrix_column("num", num_blocks, pl.Float32)
    )
    return pl.concat([frame, candidates], how="horizontal").with_columns(
        pl.from_epoch("ts", time_unit="ms").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
    )


def write_decisions_parquet(payloads: Sequence[bytes], path: Path) -> int:
    """Write the decisions' rows durably and atomically to ``path``; returns the row count."""
    frame = decisions_frame([decisions_pb2.Decision.FromString(p) for p in payloads])
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    publish(tmp, path)
    return frame.height
