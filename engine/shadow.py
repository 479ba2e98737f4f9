"""Shadow models: a candidate CTR model (``Experiment.shadows``) scores a sampled share of the
experiment's live Recommend and RankAds requests, off the request path, and what it would
have decided is logged beside what was served; it is never served.

A sampled request is handed to a bounded queue after its answer is built (the caller does not
wait for the shadow); when the queue is full the request is not shadowed and that is counted
(``reachrank_shadow_requests_total{outcome="dropped"}``). One worker thread scores the queued
requests with the shadow model: RankAds runs the request's auction again with the shadow's
pCTR, Recommend scores the items shown. Records (``reachrank.v1.ShadowScores``) go in batches
to a durable log of their own (``shadow_log_dir``: the feedback log's WAL, fsync and Parquet
form, one Parquet row per candidate), so the trainer and OPE can compare the shadow with the
served model on the same requests; without a directory only the counters are kept.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prometheus_client import Counter
from reachrank.v1 import models_pb2, ranking_pb2, shadow_pb2

from engine import pipelines
from engine.errors import FailedPrecondition, ServingError
from engine.experiments import ExperimentStore
from engine.feedback.files import publish
from engine.feedback.log import FeedbackLog
from engine.models.ctr import CTRModel
from engine.observability import request_id
from engine.registry import ModelRegistry
from engine.settings import Settings

log = logging.getLogger(__name__)
SHADOW_REQUESTS = Counter(
    "reachrank_shadow_requests",
    "Live requests sampled for a shadow model, by outcome (scored, dropped: queue full, failed)",
    ["shadow", "outcome"],
)
# A worker writes at most this many records per append (one fsync for all of them).
_BATCH = 256


@dataclass(frozen=True, slots=True)
class _Job:
    rpc: str
    experiment: models_pb2.Experiment
    shadow: models_pb2.Shadow
    request: Any
    response: Any
    request_id: str
    ts_unix_ms: int


def shadow_model_of(settings: Settings, shadow: models_pb2.Shadow) -> tuple[str, int | None]:
    return shadow.ctr_model or settings.ctr_model, shadow.ctr_version or None


class ShadowRunner:
    """The queue, worker and log of a server's shadow models."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        store: ExperimentStore,
        rng: random.Random | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.store = store
        self._rng = rng or random.Random(settings.shadow_seed)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=settings.shadow_max_pending)
        self.log = (
            FeedbackLog(
                settings.shadow_log_dir,
                max_segment_bytes=settings.feedback_segment_bytes,
                max_segment_age_s=settings.feedback_segment_age_s,
                to_parquet=write_shadow_parquet,
            )
            if settings.shadow_log_dir is not None
            else None
        )
        self.scored = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="shadow-models", daemon=True)
        self._thread.start()

    def offer(
        self, rpc: str, experiment: models_pb2.Experiment, request: Any, response: Any
    ) -> None:
        """Queue the request for each of the experiment's shadows that samples it (never
        blocks: a full queue drops it, counted)."""
        for shadow in experiment.shadows:
            if self._rng.random() >= shadow.sample_rate:
                continue
            job = _Job(
                rpc, experiment, shadow, request, response, request_id.get() or "", _now_ms()
            )
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.dropped += 1
                SHADOW_REQUESTS.labels(shadow.name, "dropped").inc()

    def drain(self) -> None:
        """Wait until every queued request is scored and its record durable."""
        self._queue.join()

    def close(self) -> None:
        """Score and write what is queued, then stop the worker and close the log."""
        self._queue.put(None)
        self._thread.join()
        if self.log is not None:
            self.log.close()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < _BATCH:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = jobs[-1] is None
            records = [r for r in map(self._score_safely, [j for j in jobs if j is not None]) if r]
            try:
                if records and self.log is not None:
                    self.log.append_payloads([r.SerializeToString() for r in records])
            except ServingError:
                log.exception("shadow log append failed: %d records lost", len(records))
            finally:
                for _ in jobs:
                    self._queue.task_done()
            if stop:
                return

    def _score_safely(self, job: _Job) -> shadow_pb2.ShadowScores | None:
        try:
            record = self.score(job)
        except Exception as exc:  # a shadow must never take the server down
            self.failed += 1
            SHADOW_REQUESTS.labels(job.shadow.name, "failed").inc()
            log.warning("shadow %r failed: %s", job.shadow.name, type(exc).__name__)
            return None
        self.scored += 1
        SHADOW_REQUESTS.labels(job.shadow.name, "scored").inc()
        return record

    def score(self, job: _Job) -> shadow_pb2.ShadowScores:
        """The shadow's decision on one request, beside the served one."""
        name, version = shadow_model_of(self.settings, job.shadow)
        ctr = self.registry.get(name, version)
        if not isinstance(ctr, CTRModel):
            raise FailedPrecondition(f"shadow model {name!r} is not a CTR model")
        request, response = job.request, job.response
        started = time.perf_counter()
        if job.rpc == "rank_ads":
            item_ids, served, served_slot, scores, slots = self._rank_ads(ctr, request, response)
        else:
            item_ids, served, served_slot, scores, slots = self._recommend(ctr, request, response)
        elapsed_ms = (time.perf_counter() - started) * 1000
        served_model = next(
            (m for m in response.models if m.kind == ctr.id.kind), ranking_pb2.ModelRef()
        )
        return shadow_pb2.ShadowScores(
            request_id=job.request_id,
            ts_unix_ms=job.ts_unix_ms,
            rpc=job.rpc,
            user_id=request.user_id,
            experiment=job.experiment.name,
            variant=response.variant,
            shadow=job.shadow.name,
            served_model=served_model,
            shadow_model=ranking_pb2.ModelRef(
                name=ctr.id.name, version=ctr.id.version, kind=ctr.id.kind, provider=ctr.id.provider
            ),
            item_ids=item_ids,
            served_scores=served,
            shadow_scores=scores,
            served_positions=served_slot,
            shadow_positions=slots,
            shadow_ms=elapsed_ms,
        )

    def _rank_ads(
        self, ctr: CTRModel, request: ranking_pb2.RankAdsRequest, response: Any
    ) -> tuple[list[str], list[float], list[int], list[float], list[int]]:
        from engine.ads.gate import bid_types_of
        from engine.servicer import candidate_columns, candidate_messages

        columnar = request.HasField("candidates")
        ad_ids, bids, overrides = (
            candidate_columns(request.candidates) if columnar else candidate_messages(request.ads)
        )
        auction = pipelines.rank_ads(
            ctr,
            self.settings,
            user_id=request.user_id,
            ad_ids=ad_ids,
            bids=bids,
            overrides=overrides,
            slots=request.slots,
            reserve_price=request.reserve_price,
            context=dict(request.context),
            # Each ad's own bid type (CPC, CPA, CPM) and the eCPM reserve, as served.
            bid_types=bid_types_of(request, len(ad_ids)),
            reserve_ecpm=request.reserve_ecpm,
        )
        if columnar:
            r = response.ranked
            served = dict(zip(r.ad_ids, zip(r.pctr, r.slot, strict=True), strict=True))
        else:
            served = {a.ad_id: (a.pctr, a.slot) for a in response.ads}
        ids = list(auction.ad_ids)
        return (
            ids,
            [served.get(a, (math.nan, 0))[0] for a in ids],
            [served.get(a, (math.nan, 0))[1] for a in ids],
            auction.pctr.tolist(),
            auction.slot.tolist(),
        )

    def _recommend(
        self, ctr: CTRModel, request: ranking_pb2.RecommendRequest, response: Any
    ) -> tuple[list[str], list[float], list[int], list[float], list[int]]:
        ids = [i.item_id for i in response.items]
        cat, num = ctr.features(request.user_id, ctr.item_rows(ids), dict(request.context))
        scores = ctr.predict(cat, num)
        # The shadow's order of the same items (ties: the served order).
        order = np.lexsort((np.arange(len(ids)), -scores))
        positions = np.empty(len(ids), dtype=np.int64)
        positions[order] = np.arange(1, len(ids) + 1)
        return (
            ids,
            [i.score for i in response.items],
            list(range(1, len(ids) + 1)),
            scores.tolist(),
            positions.tolist(),
        )


def _now_ms() -> int:
    return int(time.time() * 1000)


def shadow_frame(records: Sequence[shadow_pb2.ShadowScores]) -> pl.DataFrame:
    """One row per (shadowed request, candidate)."""
    columns: dict[str, list] = {
        k: []
        for k in (
            "request_id",
            "ts",
            "rpc",
            "user_id",
            "experiment",
            "variant",
            "shadow",
            "served_model",
            "served_version",
            "shadow_model",
            "shadow_version",
            "item_id",
            "served_score",
            "shadow_score",
            "served_position",
            "shadow_position",
            "shadow_ms",
        )
    }
    for r in records:
        n = len(r.item_ids)
        fixed = {
            "request_id": r.request_id,
            "ts": r.ts_unix_ms,
            "rpc": r.rpc,
            "user_id": r.user_id,
            "experiment": r.experiment,
            "variant": r.variant,
            "shadow": r.shadow,
            "served_model": r.served_model.name,
            "served_version": r.served_model.version,
            "shadow_model": r.shadow_model.name,
            "shadow_version": r.shadow_model.version,
            "shadow_ms": r.shadow_ms,
        }
        for key, value in fixed.items():
            columns[key].extend([value] * n)
        columns["item_id"].extend(r.item_ids)
        columns["served_score"].extend(r.served_scores)
        columns["shadow_score"].extend(r.shadow_scores)
        columns["served_position"].extend(r.served_positions)
        columns["shadow_position"].extend(r.shadow_positions)
    return pl.DataFrame(
        columns,
        schema_overrides={
            "ts": pl.Int64,
            "served_version": pl.Int64,
            "shadow_version": pl.Int64,
            "served_score": pl.Float32,
            "shadow_score": pl.Float32,
            "served_position": pl.Int32,
            "shadow_position": pl.Int32,
            "shadow_ms": pl.Float64,
        },
    )


def read_shadow_records(payloads: Sequence[bytes]) -> list[shadow_pb2.ShadowScores]:
    return [shadow_pb2.ShadowScores.FromString(p) for p in payloads]


def write_shadow_parquet(payloads: Sequence[bytes], path: Path) -> int:
    """A sealed shadow log segment as Parquet (durably, as the feedback log's converter)."""
    frame = shadow_frame(read_shadow_records(payloads))
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    publish(tmp, path)
    return frame.height


def open_shadows(
    registry: ModelRegistry, settings: Settings, store: ExperimentStore
) -> ShadowRunner:
    """The server's shadow runner, attached to the experiment store the servicers read."""
    runner = ShadowRunner(registry, settings, store)
    store.shadows = runner
    return runner
