"""The server's decision log: sampled decisions handed off without touching the disk on the
request thread, written in batches to a :class:`engine.feedback.FeedbackLog` (the feedback
log's WAL, group commit, segments and Parquet conversion) by one writer thread.

Durability: nobody waits for a decision to be acknowledged, so the bound is stated instead. A
decision submitted at time t is in the WAL and fsynced by t + ``flush_interval_ms`` + one
batch's write and fsync; :meth:`DecisionLog.durable` counts the decisions already fsynced. A
crash (or power cut) loses at most the decisions not yet counted there: those of the last
flush interval and the batch being written, never more than ``max_pending`` + one batch.
When the writer falls behind by ``max_pending`` decisions, new ones are dropped (counted in
``reachrank_decisions_total{outcome="dropped"}``) rather than making requests wait or the
queue grow without bound. An orderly shutdown (:meth:`close`) writes everything submitted.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter
from reachrank.v1 import decisions_pb2, ranking_pb2

from clients.tensors import to_tensor
from engine.decisions.config import RPCS, ExplorationSettings
from engine.decisions.draft import DecisionDraft
from engine.decisions.parquet import write_decisions_parquet
from engine.feedback.files import fsync_dir, publish
from engine.feedback.log import FeedbackLog
from engine.models.base import ModelId
from engine.observability import request_id
from engine.settings import Settings
from kernels.decision_table import SCHEMAS_DIR, schema_fingerprint

if TYPE_CHECKING:
    from engine.models.ctr import CTRModel
    from engine.routing import Route

log = logging.getLogger(__name__)
DECISIONS = Counter(
    "reachrank_decisions", "Decisions handed to the decision log", ["rpc", "outcome"]
)


@dataclass(frozen=True, slots=True)
class _Submitted:
    draft: DecisionDraft
    request_id: str
    ts_unix_ms: int
    user_id: str
    context: Mapping[str, str]
    experiment: str
    variant: str
    models: Sequence[ModelId]
    strategy: str


@dataclass(frozen=True)
class DecisionStats:
    submitted: int
    durable: int
    dropped: int


class DecisionLog:
    """Sampling, exploration and the writer thread of one decision log directory."""

    def __init__(
        self,
        directory: Path,
        *,
        sample_rates: Mapping[str, float],
        exploration: Mapping[str, ExplorationSettings] | None = None,
        flush_interval_ms: float = 20.0,
        max_pending: int = 10_000,
        max_segment_bytes: int = 64 * 1024 * 1024,
        max_segment_age_s: float | None = 300.0,
        seed: int | None = None,
    ) -> None:
        unknown = set(sample_rates) - set(RPCS) | set(exploration or {}) - set(RPCS)
        if unknown:
            raise ValueError(f"decision log: unknown RPC(s) {sorted(unknown)}; known: {RPCS}")
        self.directory = Path(directory)
        self._rates = {rpc: float(sample_rates.get(rpc, 0.0)) for rpc in RPCS}
        self._exploration = {rpc: cfg for rpc, cfg in (exploration or {}).items() if cfg.active}
        self._interval = flush_interval_ms / 1000.0
        self._max_pending = max_pending
        self._rng = np.random.default_rng(seed)
        self._coin = random.Random(seed).random
        self.wal = FeedbackLog(
            self.directory,
            fsync_interval_ms=0.0,
            max_segment_bytes=max_segment_bytes,
            max_segment_age_s=max_segment_age_s,
            to_parquet=write_decisions_parquet,
        )
        (self.directory / SCHEMAS_DIR).mkdir(exist_ok=True)
        self._schemas: weakref.WeakKeyDictionary[CTRModel, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._written = threading.Condition(self._lock)
        self._pending: list[_Submitted] = []
        self._submitted = 0
        self._durable = 0
        self._dropped = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    # -- the request thread ---------------------------------------------------------------

    def draft(self, rpc: str) -> DecisionDraft | None:
        """A draft for a request of ``rpc`` when it is sampled or explores; else None (the
        pipelines then do exactly what they do without a decision log)."""
        rate = self._rates[rpc]
        logged = rate >= 1.0 or (rate > 0.0 and self._coin() < rate)
        exploration = self._exploration.get(rpc)
        if not logged and exploration is None:
            return None
        return DecisionDraft(rpc, exploration, self._rng, logged)

    def submit(
        self,
        draft: DecisionDraft,
        user_id: str,
        context: Mapping[str, str],
        route: Route | None,
        models: Sequence[ModelId],
        strategy: str = "",
    ) -> int | None:
        """Queue the decision for the writer (never blocks on disk); its sequence number, or
        None when it is not logged (not sampled, nothing decided, or dropped: queue full)."""
        if not draft.logged or not draft.ready:
            return None
        record = _Submitted(
            draft,
            request_id.get(),
            int(time.time() * 1000),
            user_id,
            context,
            route.experiment if route is not None else "",
            route.variant if route is not None else "",
            models,
            strategy or draft.strategy,
        )
        with self._lock:
            if self._closing or len(self._pending) >= self._max_pending:
                self._dropped += 1
                dropped = True
            else:
                self._pending.append(record)
                self._submitted += 1
                dropped = False
                seq = self._submitted
        if dropped:
            DECISIONS.labels(draft.rpc, "dropped").inc()
            return None
        return seq

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._closing:
                    self._wake.wait(self._interval)
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                self._write(batch)
            if closing and not batch:
                return

    def _write(self, batch: list[_Submitted]) -> None:
        try:
            payloads = [self._record(s).SerializeToString() for s in batch]
            self.wal.append_payloads(payloads)
        except Exception:
            # Logged and counted, never raised into serving: the decisions are lost.
            log.exception("decision log: %d decisions not written", len(batch))
            outcome = "failed"
        else:
            outcome = "logged"
        counts: dict[str, int] = {}
        for s in batch:
            counts[s.draft.rpc] = counts.get(s.draft.rpc, 0) + 1
        for rpc, n in counts.items():
            DECISIONS.labels(rpc, outcome).inc(n)
        with self._lock:
            self._durable += len(batch)
            self._written.notify_all()

    def _schema(self, ctr: CTRModel) -> str:
        """The fingerprint of ``ctr``'s feature schema, its JSON made durable first."""
        fp = self._schemas.get(ctr)
        if fp is None:
            schema = ctr.schema.to_json()
            fp = schema_fingerprint(schema)
            path = self.directory / SCHEMAS_DIR / f"{fp}.json"
            if not path.exists():
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(json.dumps(schema, sort_keys=True, indent=1))
                publish(tmp, path)
                fsync_dir(self.directory)
            self._schemas[ctr] = fp
        return fp

    def _record(self, s: _Submitted) -> decisions_pb2.Decision:
        d = s.draft
        assert d.scores is not None and d.shown is not None and d.propensity is not None
        ids = d.ids if d.rows is None else [d.ids[r] for r in d.rows.tolist()]
        n = len(ids)
        positions = np.zeros(n, dtype=np.int32)
        positions[d.shown] = np.arange(1, len(d.shown) + 1)
        propensity = np.full(n, d.control_propensity)
        propensity[d.shown] = d.propensity
        record = decisions_pb2.Decision(
            request_id=s.request_id,
            ts_unix_ms=s.ts_unix_ms,
            rpc=d.rpc,
            user_id=s.user_id,
            context=dict(s.context),
            experiment=s.experiment,
            variant=s.variant,
            models=[
                ranking_pb2.ModelRef(name=m.name, version=m.version, kind=m.kind) for m in s.models
            ],
            strategy=s.strategy,
            item_ids=ids,
            scores=np.asarray(d.scores, dtype=np.float32).tolist(),
            positions=positions.tolist(),
            propensities=propensity.tolist(),
            treatments=d.treatments,
            exploration=d.exploration.method if d.explores and d.exploration else "",
            explored=d.explored,
            propensity_method=d.method,
        )
        if d.bids is not None:
            record.bids.extend(np.asarray(d.bids, dtype=np.float64).tolist())
        if d.prices is not None:
            record.prices.extend(np.asarray(d.prices, dtype=np.float64).tolist())
        if d.ctr is not None and d.cat is not None and d.num is not None:
            record.cat.CopyFrom(to_tensor(d.cat))
            record.num.CopyFrom(to_tensor(d.num))
            record.feature_schema = self._schema(d.ctr)
        return record

    # -- waiting and shutdown -------------------------------------------------------------

    def durable(self) -> int:
        """Decisions submitted so far that are fsynced (or, on a write error, given up)."""
        with self._lock:
            return self._durable

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until decision ``seq`` (as :meth:`submit` numbered it) is fsynced."""
        with self._lock:
            self._wake.notify()
            return self._written.wait_for(lambda: self._durable >= seq, timeout)

    def flush(self) -> None:
        """Write everything submitted, seal the segment and convert it to Parquet."""
        with self._lock:
            target = self._submitted
        self.wait_durable(target)
        self.wal.flush()

    def stats(self) -> DecisionStats:
        with self._lock:
            return DecisionStats(self._submitted, self._durable, self._dropped)

    def close(self) -> None:
        """Write what is queued, stop the writer and close the WAL (Parquet for the rest)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        self._thread.join()
        self.wal.close()


def open_decision_log(settings: Settings) -> DecisionLog | None:
    """The server's decision log when ``decision_log_dir`` is set (else None)."""
    if settings.decision_log_dir is None:
        return None
    return DecisionLog(
        settings.decision_log_dir,
        sample_rates=settings.decision_sample_rates,
        exploration=settings.exploration,
        flush_interval_ms=settings.decision_flush_ms,
        max_pending=settings.decision_max_pending,
        max_segment_bytes=settings.feedback_segment_bytes,
        max_segment_age_s=settings.feedback_segment_age_s,
        seed=settings.decision_seed,
    )
