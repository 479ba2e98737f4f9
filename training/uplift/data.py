"""Campaign results in: one row per customer (CSV or Parquet, read lazily with Polars) with a
``user_id``, the arm they were randomly given, customer features, a binary outcome and an
optional value; the feature schema fitted on them (:class:`kernels.tabular.TabularSchema`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from kernels.tabular import CategoricalColumn, NumericColumn, TabularSchema
from training.errors import InputError

# A string column with more distinct values than this is an identifier, not a category.
MAX_CATEGORIES = 50
# Numeric columns whose values are all >= 0 and this skewed (max / (median + 1)) get log1p.
LOG_SKEW = 20.0


@dataclass(frozen=True)
class CampaignSpec:
    treatment_column: str
    control: str
    outcome_column: str
    value_column: str | None = None
    user_column: str = "user_id"


@dataclass(frozen=True)
class CampaignData:
    """Encoded rows: ``arm`` 0 = control, 1.. = ``treatments`` in order."""

    user_ids: list[str]
    x: np.ndarray  # float32 [n, width]
    arm: np.ndarray  # int64 [n]
    y: np.ndarray  # float32 [n], 0/1
    value: np.ndarray | None  # float64 [n]: the outcome's value (spend)
    treatments: tuple[str, ...]
    schema: TabularSchema
    ignored: tuple[str, ...]  # columns left out, with why in the trainer's report


def scan_table(path: Path) -> pl.LazyFrame:
    """A CSV or Parquet file (or a folder of Parquet files) as a LazyFrame."""
    if path.is_dir():
        return pl.scan_parquet(path / "*.parquet")
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return pl.scan_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",")
    return pl.scan_parquet(path)


def read_campaign(path: Path, spec: CampaignSpec) -> pl.DataFrame:
    """The campaign table, checked: the named columns exist, the control arm and at least one
    treatment occur, outcomes are 0/1. Raises InputError naming what is wrong."""
    lf = scan_table(path)
    names = lf.collect_schema().names()
    named = [spec.user_column, spec.treatment_column, spec.outcome_column]
    named += [spec.value_column] if spec.value_column else []
    missing = [c for c in named if c not in names]
    if missing:
        raise InputError(f"{path}: no column(s) {missing}; the file has {names}")
    frame = lf.with_columns(
        pl.col(spec.user_column).cast(pl.String),
        pl.col(spec.treatment_column).cast(pl.String),
    ).collect()
    if frame.height == 0:
        raise InputError(f"{path}: no rows")
    arms = set(frame[spec.treatment_column].drop_nulls().unique().to_list())
    if spec.control not in arms:
        raise InputError(
            f"{path}: control value {spec.control!r} never occurs in {spec.treatment_column!r} "
            f"(values: {sorted(arms)})"
        )
    if len(arms) < 2:
        raise InputError(f"{path}: only the control arm occurs; a campaign needs a treatment")
    outcome = frame[spec.outcome_column].cast(pl.Float64, strict=False)
    if outcome.is_null().any() or not outcome.is_in([0.0, 1.0]).all():
        raise InputError(
            f"{path}: outcome column {spec.outcome_column!r} must be 0/1 (or true/false) in "
            "every row"
        )
    return frame


def fit_schema(frame: pl.DataFrame, features: Sequence[str]) -> tuple[TabularSchema, list[str]]:
    """The encoding of ``features``; returns it and the columns ignored (ids, dates)."""
    numeric, categorical, ignored = [], [], []
    for name in features:
        dtype = frame.schema[name]
        column = frame[name]
        if dtype.is_numeric() or dtype == pl.Boolean:
            x = column.cast(pl.Float64).to_numpy()
            finite = x[np.isfinite(x)]
            if finite.size == 0:
                ignored.append(name)
                continue
            fill = float(np.median(finite))
            log = bool(finite.min() >= 0 and finite.max() / (fill + 1.0) > LOG_SKEW)
            x = np.where(np.isfinite(x), x, fill)
            x = np.log1p(x) if log else x
            std = float(x.std())
            numeric.append(NumericColumn(name, float(x.mean()), std if std > 0 else 1.0, fill, log))
        elif dtype in (pl.String, pl.Categorical, pl.Enum):
            values = column.cast(pl.String).drop_nulls().unique().sort().to_list()
            if not 0 < len(values) <= MAX_CATEGORIES:
                ignored.append(name)
                continue
            categorical.append(CategoricalColumn(name, tuple(values)))
        else:
            ignored.append(name)
    if not numeric and not categorical:
        raise InputError(
            f"no usable customer feature among {list(features)} (numbers, or text with at most "
            f"{MAX_CATEGORIES} distinct values)"
        )
    return TabularSchema(tuple(numeric), tuple(categorical)), ignored


def encode_frame(schema: TabularSchema, frame: pl.DataFrame) -> np.ndarray:
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise InputError(f"the customers lack the model's feature column(s) {missing}")
    columns = {
        c.name: frame[c.name].cast(pl.Float64, strict=False).to_numpy() for c in schema.numeric
    }
    columns.update({c.name: frame[c.name].cast(pl.String).to_list() for c in schema.categorical})
    return schema.encode(columns, frame.height)


def campaign_data(frame: pl.DataFrame, spec: CampaignSpec) -> CampaignData:
    """Fit the schema on the campaign table and encode it."""
    reserved = {spec.user_column, spec.treatment_column, spec.outcome_column, spec.value_column}
    features = [c for c in frame.columns if c not in reserved]
    schema, ignored = fit_schema(frame, features)
    arms = frame[spec.treatment_column].fill_null(spec.control)
    treatments = tuple(sorted(set(arms.unique().to_list()) - {spec.control}))
    code = {spec.control: 0, **{t: i for i, t in enumerate(treatments, start=1)}}
    value = None
    if spec.value_column:
        value = frame[spec.value_column].cast(pl.Float64, strict=False).fill_null(0.0).to_numpy()
    return CampaignData(
        user_ids=frame[spec.user_column].to_list(),
        x=encode_frame(schema, frame),
        arm=arms.replace_strict(code, return_dtype=pl.Int64).to_numpy(),
        y=frame[spec.outcome_column].cast(pl.Float32).to_numpy(),
        value=value,
        treatments=treatments,
        schema=schema,
        ignored=tuple(ignored),
    )
