"""A/B experiments: validation, sticky assignment of users to variants, and the store the
servers read them from.

A user's bucket is MurmurHash3 (``kernels.hash_strings``, stable across processes and
releases, unlike Python's ``hash``) of ``"<salt>:<user_id>"`` read as a fraction of 2**32; the
variants split [0, 1) by cumulative weight. The salt defaults to the experiment's name, so two
experiments split users independently unless they share a salt on purpose.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf import json_format
from reachrank.v1 import models_pb2

from engine.errors import BundleError, InvalidArgument, NotFound, ServingError
from engine.guardrails import STOPPED, GuardrailMonitor, control_of, validate_guardrails
from kernels import hash_string, hash_strings

if TYPE_CHECKING:
    from engine.experiment_file import ExperimentFile
    from engine.shadow import ShadowRunner

log = logging.getLogger(__name__)

RPCS = ("recommend", "rank_ads")
_HASH_RANGE = float(2**32)


class ExperimentError(InvalidArgument):
    """An experiment definition that cannot be served; the message names the field."""


def validate(experiment: models_pb2.Experiment) -> None:
    """Raise ExperimentError naming the first bad field."""
    if not experiment.name:
        raise ExperimentError("experiment.name is required")
    where = f"experiment {experiment.name!r}"
    if not experiment.variants:
        raise ExperimentError(f"{where}: variants: at least one variant is required")
    seen: set[str] = set()
    for i, variant in enumerate(experiment.variants):
        if not variant.name:
            raise ExperimentError(f"{where}: variants[{i}].name is required")
        if variant.name in seen:
            raise ExperimentError(f"{where}: variants[{i}].name {variant.name!r} is repeated")
        seen.add(variant.name)
        if not (math.isfinite(variant.weight) and variant.weight > 0):
            raise ExperimentError(
                f"{where}: variants[{i}].weight must be finite and > 0, got {variant.weight}"
            )
        if variant.ctr_version < 0 or variant.retrieval_version < 0:
            raise ExperimentError(f"{where}: variants[{i}]: versions must be >= 0")
    validate_guardrails(experiment, where)
    if not experiment.rpcs:
        raise ExperimentError(f"{where}: rpcs: name at least one of {list(RPCS)}")
    for i, rpc in enumerate(experiment.rpcs):
        if rpc not in RPCS:
            raise ExperimentError(f"{where}: rpcs[{i}] must be one of {list(RPCS)}, got {rpc!r}")


def salt_of(experiment: models_pb2.Experiment) -> str:
    return experiment.salt or experiment.name


def buckets(salt: str, user_ids: Sequence[str]) -> np.ndarray:
    """Each user's position in [0, 1) for this salt (float64)."""
    keys = [f"{salt}:{u}" for u in user_ids]
    return hash_strings(keys).astype(np.float64) / _HASH_RANGE


def split(experiment: models_pb2.Experiment, user_ids: Sequence[str]) -> np.ndarray:
    """Index of each user's variant (int64), ignoring targeting and the enabled flag."""
    return np.searchsorted(
        _bounds(experiment), buckets(salt_of(experiment), user_ids), side="right"
    )


def _bounds(experiment: models_pb2.Experiment) -> np.ndarray:
    """Upper end of each variant's share of [0, 1)."""
    weights = np.array([v.weight for v in experiment.variants], dtype=np.float64)
    bounds = np.cumsum(weights) / weights.sum()
    bounds[-1] = 1.0  # rounding must not leave a sliver of [0, 1) without a variant
    return bounds


def targeted(experiment: models_pb2.Experiment, segment: str | Collection[str] | None) -> bool:
    """Whether a user in ``segment`` (one name or several, None: unknown) may enter."""
    if not experiment.segments:
        return True
    if segment is None:
        return False
    mine = {segment} if isinstance(segment, str) else set(segment)
    return not mine.isdisjoint(experiment.segments)


def assign(
    experiment: models_pb2.Experiment,
    user_id: str,
    segment: str | Collection[str] | None = None,
) -> str | None:
    """The variant serving ``user_id``; None when the experiment is off or excludes the user."""
    if not experiment.enabled or not targeted(experiment, segment):
        return None
    bucket = hash_string(f"{salt_of(experiment)}:{user_id}") / _HASH_RANGE
    variant = experiment.variants[int(np.searchsorted(_bounds(experiment), bucket, side="right"))]
    # A variant stopped by a guardrail keeps its users' buckets; the control serves them.
    return control_of(experiment) if variant.state == STOPPED else variant.name


class ExperimentStore:
    """The experiments a server runs, safe to read and change from many RPC threads.

    With a `backing` file (`engine.experiment_file`), changes are written through to it and
    `refresh` adopts what other processes wrote; `prepare` readies an experiment's models
    before it takes traffic (experiments it refuses are not adopted, with a warning).
    """

    def __init__(
        self,
        experiments: Sequence[models_pb2.Experiment] = (),
        backing: ExperimentFile | None = None,
        prepare: Callable[[models_pb2.Experiment], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._experiments: dict[str, models_pb2.Experiment] = {}
        self._backing = backing
        self._prepare = prepare
        self._stamp = backing.stamp() if backing is not None else None
        for experiment in experiments:
            validate(experiment)
            self._experiments[experiment.name] = _copy(experiment)
        # Guarded rollout: stops variants that are significantly worse (engine.guardrails).
        self.guardrails = GuardrailMonitor(self)
        # Scores the experiments' shadow models off the request path (engine.shadow).
        self.shadows: ShadowRunner | None = None

    def set(self, experiment: models_pb2.Experiment) -> models_pb2.Experiment:
        """Create or replace an experiment (already prepared); returns the stored copy."""
        validate(experiment)
        stored = _copy(experiment)
        if self._backing is None:
            with self._lock:
                self._experiments[stored.name] = stored
            return stored
        with self._backing.locked():
            current = {e.name: e for e in self._backing.read()}  # others' changes too
            current[stored.name] = stored
            self._backing.write(current.values())
            self._adopt(current.values(), self._backing.stamp(), prepared=stored.name)
        return stored

    def refresh(self) -> bool:
        """Adopt the backing file's experiments if another process changed it; True if so.
        A file that does not parse is reported and the experiments in memory stay."""
        if self._backing is None or self._backing.stamp() == self._stamp:
            return False
        with self._backing.locked():  # not interleaved with this process's own writes
            stamp = self._backing.stamp()
            if stamp == self._stamp:
                return False
            try:
                experiments = self._backing.read()
            except ExperimentError as exc:
                log.warning("experiments file not adopted, serving the previous ones: %s", exc)
                self._stamp = stamp
                return False
            self._adopt(experiments, stamp)
        return True

    def _adopt(
        self,
        experiments: Iterable[models_pb2.Experiment],
        stamp: object,
        prepared: str | None = None,
    ) -> None:
        with self._lock:
            old = dict(self._experiments)
        ready = {}
        for experiment in experiments:
            name = experiment.name
            if self._prepare is not None and name != prepared and old.get(name) != experiment:
                try:
                    self._prepare(experiment)
                except (ServingError, BundleError) as exc:
                    log.warning("experiment %r not adopted: %s", name, exc)
                    if name in old:
                        ready[name] = old[name]
                    continue
            ready[name] = _copy(experiment)
        with self._lock:
            self._experiments = ready
            self._stamp = stamp

    def get(self, name: str) -> models_pb2.Experiment:
        with self._lock:
            try:
                return self._experiments[name]
            except KeyError:
                raise NotFound(f"no experiment named {name!r}") from None

    def find(self, name: str) -> models_pb2.Experiment | None:
        with self._lock:
            return self._experiments.get(name)

    def stop_variant(self, name: str, variant: str, reason: str, when_ms: int) -> bool:
        """Mark ``variant`` of experiment ``name`` stopped (written through to the file);
        False if it is gone or was already stopped."""

        def stopped(experiment: models_pb2.Experiment) -> models_pb2.Experiment | None:
            for v in experiment.variants:
                if v.name == variant and v.state != STOPPED:
                    out = _copy(experiment)
                    arm = next(a for a in out.variants if a.name == variant)
                    arm.state, arm.stop_reason, arm.stopped_unix_ms = STOPPED, reason, when_ms
                    return out
            return None

        if self._backing is None:
            with self._lock:
                current = self._experiments.get(name)
                changed = stopped(current) if current is not None else None
                if changed is not None:
                    self._experiments[name] = changed
            return changed is not None
        with self._backing.locked():
            on_file = {e.name: e for e in self._backing.read()}
            changed = stopped(on_file[name]) if name in on_file else None
            if changed is None:
                return False
            on_file[name] = changed
            self._backing.write(on_file.values())
            self._adopt(on_file.values(), self._backing.stamp(), prepared=name)
        return True

    def list(self) -> list[models_pb2.Experiment]:
        with self._lock:
            return [self._experiments[n] for n in sorted(self._experiments)]

    def delete(self, name: str) -> None:
        if self._backing is None:
            with self._lock:
                if self._experiments.pop(name, None) is None:
                    raise NotFound(f"no experiment named {name!r}")
            return
        with self._backing.locked():
            current = {e.name: e for e in self._backing.read()}
            if current.pop(name, None) is None:
                raise NotFound(f"no experiment named {name!r}")
            self._backing.write(current.values())
            self._adopt(current.values(), self._backing.stamp())

    def active(self, rpc: str) -> list[models_pb2.Experiment]:
        """Enabled experiments that apply to ``rpc`` ("recommend" or "rank_ads")."""
        return [e for e in self.list() if e.enabled and rpc in e.rpcs]

    def assignments(
        self, rpc: str, user_id: str, segment: str | Collection[str] | None = None
    ) -> list[tuple[str, models_pb2.Variant]]:
        """(experiment name, variant) for every active experiment of ``rpc`` the user is in,
        by experiment name."""
        found = []
        for experiment in self.active(rpc):
            name = assign(experiment, user_id, segment)
            if name is not None:
                found.append(
                    (experiment.name, next(v for v in experiment.variants if v.name == name))
                )
        return found


def _copy(experiment: models_pb2.Experiment) -> models_pb2.Experiment:
    stored = models_pb2.Experiment()
    stored.CopyFrom(experiment)
    return stored


def load_experiments(path: Path) -> list[models_pb2.Experiment]:
    """Experiments from a JSON file: ``{"experiments": [...]}`` in protobuf's JSON mapping."""
    try:
        document = json.loads(Path(path).read_text())
        entries = document["experiments"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: expected {{'experiments': [...]}}: {exc}") from None
    experiments = []
    for i, entry in enumerate(entries):
        try:
            experiment = json_format.ParseDict(entry, models_pb2.Experiment())
            validate(experiment)
        except (json_format.ParseError, ExperimentError) as exc:
            raise ExperimentError(f"{path}: experiments[{i}]: {exc}") from None
        experiments.append(experiment)
    return experiments
