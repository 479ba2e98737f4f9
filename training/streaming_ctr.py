"""The CTR examples of a log larger than memory: built per user partition, written to Parquet,
encoded into row files that the models fit on a chunk at a time.

Per partition (:func:`training.streaming.user_partitions`), the same functions as the in-memory
path label the impressions (:func:`training.pipeline.ctr_frame`, the split plan) and add the
point-in-time histories (:func:`training.history.with_history_before`); each partition's rows
are sorted as the in-memory path sorts them, encoded by the same feature schema, and appended
to ``train``/``valid``/``test`` row files (:class:`DiskRows`). A log that fits one partition
and one chunk therefore trains on exactly the in-memory path's batches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import polars as pl

from kernels.featurize import FeatureSchema
from training.fit import Rows
from training.history import HistorySpec, with_history_before
from training.streaming import ROW_GROUP, StreamingConfig, user_partitions

if TYPE_CHECKING:
    from training.pipeline import Dataset, SplitPlan, TrainConfig

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("train", "valid", "test")
# How the in-memory path orders the CTR frame (joins do not keep row order).
ROW_ORDER: tuple[str, ...] = ("ts", "user_id", "item_id", "position")


@dataclass(frozen=True)
class DiskRows:
    """Encoded rows in three flat files (``cat.bin`` int64 [n, F], ``num.bin`` float32 [n, N],
    ``label.bin`` float32 [n]) plus optional float64 columns, read a chunk at a time."""

    directory: Path
    n: int
    n_cat: int
    n_num: int
    chunk_rows: int
    positives: int

    def __len__(self) -> int:
        return self.n

    @property
    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n / self.chunk_rows))

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        first = index * self.chunk_rows
        rows = max(0, min(self.n, first + self.chunk_rows) - first)
        return (
            self._read("cat.bin", np.int64, first, rows, self.n_cat).reshape(rows, self.n_cat),
            self._read("num.bin", np.float32, first, rows, self.n_num).reshape(rows, self.n_num),
            self._read("label.bin", np.float32, first, rows, 1),
        )

    def labels(self) -> np.ndarray:
        return self._read("label.bin", np.float32, 0, self.n, 1)

    def rate(self) -> float:
        """The share of positive labels."""
        return self.positives / self.n if self.n else float("nan")

    def column(self, name: str) -> np.ndarray:
        """An extra float64 column (one value a row), whole."""
        return self._read(f"{name}.bin", np.float64, 0, self.n, 1)

    def head(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``rows`` rows' (cat, num)."""
        rows = min(rows, self.n)
        return (
            self._read("cat.bin", np.int64, 0, rows, self.n_cat).reshape(rows, self.n_cat),
            self._read("num.bin", np.float32, 0, rows, self.n_num).reshape(rows, self.n_num),
        )

    def _read(self, name: str, dtype: Any, first: int, rows: int, width: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * width
        # Plain reads, not a memory map: mapped pages would count in the process's RSS.
        return np.fromfile(
            self.directory / name, dtype=dtype, count=rows * width, offset=first * size
        )


class RowsWriter:
    """Appends encoded rows to the files of a :class:`DiskRows`."""

    def __init__(self, directory: Path, n_cat: int, n_num: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.n_cat, self.n_num = directory, n_cat, n_num
        self.n, self.positives = 0, 0
        self._files: dict[str, BinaryIO] = {}

    def append(
        self, cat: np.ndarray, num: np.ndarray, label: np.ndarray, **extra: np.ndarray
    ) -> None:
        columns = {
            "cat": np.ascontiguousarray(cat, dtype=np.int64),
            "num": np.ascontiguousarray(num, dtype=np.float32),
            "label": np.ascontiguousarray(label, dtype=np.float32),
            **{k: np.ascontiguousarray(v, dtype=np.float64) for k, v in extra.items()},
        }
        for name, values in columns.items():
            if name not in self._files:
                self._files[name] = (self.directory / f"{name}.bin").open("wb")
            self._files[name].write(values.tobytes())
        self.n += len(label)
        self.positives += int(label.sum())

    def close(self, chunk_rows: int) -> DiskRows:
        for name in ("cat", "num", "label"):
            if name not in self._files:
                (self.directory / f"{name}.bin").write_bytes(b"")
        for f in self._files.values():
            f.close()
        return DiskRows(self.directory, self.n, self.n_cat, self.n_num, chunk_rows, self.positives)


@dataclass
class CTRExamples:
    """The CTR examples as the trainer fits on them: encoded rows per part, and what the
    bundles need of the examples. The streaming path holds no row per event in memory; the
    in-memory path (:func:`training.pipeline.in_memory_ctr`) also keeps its frame and arrays
    (the conversion model trains on them)."""

    # The labelled examples with their features.
    examples: pl.LazyFrame
    spec: dict[str, Any]
    history: HistorySpec | None
    schema: FeatureSchema
    # Encoded rows of "train", "valid" and "test".
    rows: dict[str, Rows]
    # Rows and users per part, as training.pipeline.part_sizes.
    sizes: dict[str, dict[str, int]]
    # Distinct positions among the examples (a position tower needs more than one).
    positions: int
    # The users seen in the examples (user_id, sorted).
    users: pl.DataFrame
    # The first rows of the frame (an export example).
    example: tuple[np.ndarray, np.ndarray]
    # The simulator's true click probability of each test row (None without ground truth).
    oracle_test: np.ndarray | None
    # In memory only: the sorted frame, its (cat, num, label) arrays, the part masks.
    frame: pl.DataFrame | None = None
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    masks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def streamed_ctr(data: Dataset, plan: SplitPlan, config: TrainConfig) -> CTRExamples:
    """Build, encode and write the CTR examples of ``data`` per user partition."""
    from training.pipeline import (
        ctr_frame,
        ctr_history,
        ctr_schema,
        encode_frame,
        oracle_probability,
    )

    streaming: StreamingConfig = config.streaming  # type: ignore[attr-defined]
    work = streaming.work_dir / "ctr"
    work.mkdir(parents=True, exist_ok=True)
    parts = user_partitions(data.events, work / "events", streaming.partition_events)
    log.info("CTR examples: %d user partition(s)", len(parts))
    labelled, spec = [], {}
    for p, events in enumerate(parts):
        examples, spec = plan.label(ctr_frame(replace(data, events=events)))
        path = work / f"labelled-{p:04d}.parquet"
        examples.sink_parquet(path, row_group_size=ROW_GROUP)
        labelled.append(path)
    examples = pl.scan_parquet(labelled)
    history = ctr_history(data, examples, config)
    featured = labelled
    if history is not None:
        featured = []
        for p, events in enumerate(parts):
            path = work / f"examples-{p:04d}.parquet"
            with_history_before(
                pl.scan_parquet(labelled[p]), events, data.items, history
            ).sink_parquet(path, row_group_size=ROW_GROUP)
            featured.append(path)
        examples = pl.scan_parquet(featured)
    schema = ctr_schema(data, examples, config.n_buckets, config.numeric_context, history)
    keep = [c for c in ("device",) if c in examples.collect_schema().names()]
    columns = [*dict.fromkeys([*schema.field_names, "user_id", "item_id", "position", *keep])]
    oracle = data.ground_truth is not None and "device" in keep
    writers = {
        name: RowsWriter(work / name, len(schema.categorical), len(schema.numeric))
        for name in PARTS
    }
    example: tuple[np.ndarray, np.ndarray] | None = None
    for path in featured:
        frame = (
            pl.scan_parquet(path)
            .select(*columns, "label", "split", "ts")
            .collect()
            .sort(*ROW_ORDER)
        )
        cat, num = encode_frame(schema, frame)
        if example is None and len(cat):
            example = (cat[:8].copy(), num[:8].copy())
        label = frame["label"].to_numpy().astype(np.float32)
        split = frame["split"].to_numpy()
        for name, writer in writers.items():
            mask = split == name
            extra = {}
            if oracle and name == "test":
                extra["oracle"] = oracle_probability(
                    data.ground_truth,  # type: ignore[arg-type]
                    frame.filter(pl.Series(mask)),
                )
            writer.append(cat[mask], num[mask], label[mask], **extra)
        del frame, cat, num
    disk = {name: w.close(streaming.chunk_rows) for name, w in writers.items()}
    rows: dict[str, Rows] = dict(disk)
    sizes = (
        examples.group_by("split")
        .agg(pl.len().alias("rows"), pl.col("user_id").n_unique().alias("users"))
        .sort("split")
        .collect()
    )
    n_positions = int(examples.select(pl.col("position").n_unique()).collect().item())
    users = examples.select("user_id").unique().sort("user_id").collect()
    empty = (
        np.zeros((0, len(schema.categorical)), np.int64),
        np.zeros((0, len(schema.numeric)), np.float32),
    )
    return CTRExamples(
        examples=examples,
        spec=spec,
        history=history,
        schema=schema,
        rows=rows,
        sizes={
            r["split"]: {"rows": r["rows"], "users": r["users"]}
            for r in sizes.iter_rows(named=True)
        },
        positions=n_positions,
        users=users,
        example=example if example is not None else empty,
        oracle_test=disk["test"].column("oracle") if oracle else None,
    )
