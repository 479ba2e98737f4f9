"""Guarded rollout: an experiment's guardrails stop a variant that is significantly worse than
the control, and its users are served by the control from then on.

Each guardrail is a one-sided test of "the variant is worse than the control by more than the
margin": a two-proportion z-test (Agresti-Caffo: one success and one failure added to each arm)
for ``error_rate``, ``ctr`` and ``p99_latency`` (the share of requests slower than the
control's p99, which is 1% for the control itself), a Welch z-test for
``revenue_per_impression``. Looking again as data arrives would inflate the false-stop rate,
so looks happen only when both arms pass ``min_samples``, 2x, 4x, ... samples, and look k is
tested at ``alpha / 2**(k+1)``: over the experiment's life the chance that a variant no worse
than the control is stopped by a guardrail stays below its alpha (Bonferroni over the looks).

Requests feed error rate and latency (``watched`` around the servicer's RPCs); LogEvents'
impressions, clicks and purchases that name the experiment and variant feed CTR and revenue.
Counts live in each server process; a stop is written through the experiment store (and so
its file), which every process and restart adopts.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import numpy as np
from prometheus_client import Counter
from reachrank.v1 import models_pb2

from engine.errors import ServingError

if TYPE_CHECKING:
    from reachrank.v1 import feedback_pb2

    from engine.experiments import ExperimentStore

log = logging.getLogger(__name__)

METRICS = ("error_rate", "p99_latency", "ctr", "revenue_per_impression")
FEEDBACK_METRICS = ("ctr", "revenue_per_impression")
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_SAMPLES = 1000
STOPPED = models_pb2.VARIANT_STATE_STOPPED
# Statuses that count as the variant's failure (the others depend on the request, not the arm).
ERROR_CODES = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DATA_LOSS,
    }
)
# Latency histogram: log-spaced buckets from 10 µs up (8% wide), the last one open.
_LATENCY_FLOOR_S = 1e-5
_LATENCY_GROWTH = 1.08
_LATENCY_BUCKETS = 240

STOPS = Counter(
    "reachrank_guardrail_stops",
    "Variants stopped by a guardrail (users routed back to the control).",
    ["experiment", "variant", "metric"],
)


def critical_z(alpha: float, look: int) -> float:
    """The z a look must exceed: look ``look`` (0-based) spends ``alpha / 2**(look+1)``."""
    return NormalDist().inv_cdf(1.0 - alpha / 2.0 ** (look + 1))


def look_of(samples: int, min_samples: int) -> int:
    """The latest look due at ``samples`` (-1: none yet): looks at min, 2 min, 4 min, ..."""
    if samples < min_samples:
        return -1
    return math.floor(math.log2(samples / min_samples))


def proportion_worse_z(
    bad_variant: int, n_variant: int, bad_control: int, n_control: int, margin: float
) -> float:
    """z of "the variant's rate of a bad outcome exceeds the control's by more than
    ``margin`` (relative)": Agresti-Caffo (+1 bad, +1 good per arm)."""
    pv = (bad_variant + 1) / (n_variant + 2)
    pc = (bad_control + 1) / (n_control + 2)
    bound = pc * (1.0 + margin)
    se = math.sqrt(
        pv * (1 - pv) / (n_variant + 2) + (1 + margin) ** 2 * pc * (1 - pc) / (n_control + 2)
    )
    return (pv - bound) / se


def proportion_lower_z(
    good_variant: int, n_variant: int, good_control: int, n_control: int, margin: float
) -> float:
    """z of "the variant's rate of a good outcome is below the control's by more than
    ``margin`` (relative)", the mirror of :func:`proportion_worse_z`."""
    pv = (good_variant + 1) / (n_variant + 2)
    pc = (good_control + 1) / (n_control + 2)
    bound = pc * (1.0 - margin)
    se = math.sqrt(
        pv * (1 - pv) / (n_variant + 2) + (1 - margin) ** 2 * pc * (1 - pc) / (n_control + 2)
    )
    return (bound - pv) / se


def mean_lower_z(
    sum_v: float, sq_v: float, n_v: int, sum_c: float, sq_c: float, n_c: int, margin: float
) -> float:
    """Welch z of "the variant's mean is below the control's by more than ``margin``"."""
    mv, mc = sum_v / n_v, sum_c / n_c
    var_v = max(sq_v / n_v - mv * mv, 0.0) * n_v / max(n_v - 1, 1)
    var_c = max(sq_c / n_c - mc * mc, 0.0) * n_c / max(n_c - 1, 1)
    se = math.sqrt(var_v / n_v + (1 - margin) ** 2 * var_c / n_c)
    if se == 0.0:
        return 0.0
    return (mc * (1 - margin) - mv) / se


@dataclass
class ArmStats:
    """What one arm of one experiment has seen in this process."""

    requests: int = 0
    errors: int = 0
    latency: np.ndarray = field(default_factory=lambda: np.zeros(_LATENCY_BUCKETS, np.int64))
    impressions: int = 0
    clicks: int = 0
    revenue: float = 0.0
    revenue_sq: float = 0.0  # of revenue per impression, summed over purchases' values

    def samples(self, metric: str) -> int:
        return self.impressions if metric in FEEDBACK_METRICS else self.requests


def latency_bucket(seconds: float) -> int:
    if seconds <= _LATENCY_FLOOR_S:
        return 0
    b = int(math.log(seconds / _LATENCY_FLOOR_S) / math.log(_LATENCY_GROWTH)) + 1
    return min(b, _LATENCY_BUCKETS - 1)


def _p99_bucket(histogram: np.ndarray) -> int:
    """The bucket holding the 99th percentile."""
    cumulative = np.cumsum(histogram)
    return int(np.searchsorted(cumulative, 0.99 * cumulative[-1], side="left"))


def _latency_z(variant: ArmStats, control: ArmStats, margin: float) -> tuple[float, str]:
    """Share of requests above the control's p99 (1% for the control): the variant's p99 is
    beyond the control's by more than ``margin`` when its share above (1+margin) x that is
    significantly more than the control's share above it."""
    cut = _p99_bucket(control.latency)
    shift = math.ceil(math.log1p(margin) / math.log(_LATENCY_GROWTH)) if margin > 0 else 0
    slow_c = int(control.latency[cut + 1 :].sum())
    slow_v = int(variant.latency[min(cut + 1 + shift, _LATENCY_BUCKETS) :].sum())
    z = proportion_worse_z(slow_v, variant.requests, slow_c, control.requests, 0.0)
    p99_ms = _LATENCY_FLOOR_S * _LATENCY_GROWTH ** (cut) * 1000
    return z, (
        f"{slow_v / variant.requests:.2%} of its requests slower than the control's p99 "
        f"(~{p99_ms:.2f} ms) vs {slow_c / control.requests:.2%}"
    )


def guardrail_z(
    guardrail: models_pb2.Guardrail, variant: ArmStats, control: ArmStats
) -> tuple[float, str]:
    """(z, what was compared) of one guardrail; a large z means the variant is worse."""
    m, metric = guardrail.margin, guardrail.metric
    if metric == "error_rate":
        z = proportion_worse_z(
            variant.errors, variant.requests, control.errors, control.requests, m
        )
        rv, rc = variant.errors / variant.requests, control.errors / control.requests
        return z, f"error rate {rv:.2%} vs control {rc:.2%}"
    if metric == "p99_latency":
        return _latency_z(variant, control, m)
    if metric == "ctr":
        z = proportion_lower_z(
            variant.clicks, variant.impressions, control.clicks, control.impressions, m
        )
        rv, rc = variant.clicks / variant.impressions, control.clicks / control.impressions
        return z, f"CTR {rv:.4f} vs control {rc:.4f}"
    z = mean_lower_z(
        variant.revenue,
        variant.revenue_sq,
        variant.impressions,
        control.revenue,
        control.revenue_sq,
        control.impressions,
        m,
    )
    rv, rc = variant.revenue / variant.impressions, control.revenue / control.impressions
    return z, f"revenue per impression {rv:.4f} vs control {rc:.4f}"


def control_of(experiment: models_pb2.Experiment) -> str:
    return experiment.control or experiment.variants[0].name


class GuardrailMonitor:
    """Counts per (experiment, variant) in this process; looks at the guardrails when a look
    is due and stops a variant through the store."""

    def __init__(self, store: ExperimentStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._arms: dict[tuple[str, str], ArmStats] = {}
        # (experiment, variant, metric) -> the last look taken.
        self._looked: dict[tuple[str, str, str], int] = {}
        # The definition the counts belong to: a Set that changes the experiment restarts them.
        self._defined: dict[str, bytes] = {}

    def stats(self, experiment: str, variant: str) -> ArmStats:
        with self._lock:
            return self._arms.setdefault((experiment, variant), ArmStats())

    def record_request(
        self, experiment: models_pb2.Experiment, variant: str, seconds: float, failed: bool
    ) -> None:
        if not experiment.guardrails:
            return
        with self._lock:
            self._restart_if_redefined(experiment)
            arm = self._arms.setdefault((experiment.name, variant), ArmStats())
            arm.requests += 1
            arm.errors += failed
            arm.latency[latency_bucket(seconds)] += 1
        self._look(experiment, variant, ("error_rate", "p99_latency"))

    def observe(self, events: Iterable[feedback_pb2.FeedbackEvent]) -> None:
        """LogEvents' durable events: impressions, clicks and purchases of guarded arms."""
        touched: dict[tuple[str, str], models_pb2.Experiment] = {}
        for event in events:
            if not event.experiment or event.event not in ("impression", "click", "purchase"):
                continue
            key = (event.experiment, event.variant)
            experiment = touched.get(key)
            if experiment is None:
                experiment = self._store.find(event.experiment)
                if experiment is None or not any(
                    g.metric in FEEDBACK_METRICS for g in experiment.guardrails
                ):
                    continue
                touched[key] = experiment
            with self._lock:
                self._restart_if_redefined(experiment)
                arm = self._arms.setdefault(key, ArmStats())
                if event.event == "impression":
                    arm.impressions += 1
                elif event.event == "click":
                    arm.clicks += 1
                else:
                    arm.revenue += event.value
                    arm.revenue_sq += event.value * event.value
        for (_, variant), experiment in touched.items():
            self._look(experiment, variant, FEEDBACK_METRICS)

    def _restart_if_redefined(self, experiment: models_pb2.Experiment) -> None:
        """Called under the lock: counts of an older definition of the experiment go."""
        definition = _definition(experiment)
        if self._defined.get(experiment.name) == definition:
            return
        if experiment.name in self._defined:
            for key in [k for k in self._arms if k[0] == experiment.name]:
                del self._arms[key]
            for key in [k for k in self._looked if k[0] == experiment.name]:
                del self._looked[key]
        self._defined[experiment.name] = definition

    def _look(
        self, experiment: models_pb2.Experiment, variant: str, metrics: Iterable[str]
    ) -> None:
        control = control_of(experiment)
        if variant == control:
            variants = [v.name for v in experiment.variants if v.name != control]
        else:
            variants = [variant]
        for guardrail in experiment.guardrails:
            if guardrail.metric not in metrics:
                continue
            for name in variants:
                if self._due_and_worse(experiment, name, control, guardrail):
                    return

    def _due_and_worse(
        self,
        experiment: models_pb2.Experiment,
        variant: str,
        control: str,
        guardrail: models_pb2.Guardrail,
    ) -> bool:
        """Take the look now due, if one is; stop the variant when it fails. True if stopped."""
        state = next((v.state for v in experiment.variants if v.name == variant), None)
        if state is None or state == STOPPED:
            return False
        min_samples = guardrail.min_samples or DEFAULT_MIN_SAMPLES
        alpha = guardrail.alpha or DEFAULT_ALPHA
        key = (experiment.name, variant, guardrail.metric)
        with self._lock:
            v = self._arms.get((experiment.name, variant))
            c = self._arms.get((experiment.name, control))
            if v is None or c is None:
                return False
            samples = min(v.samples(guardrail.metric), c.samples(guardrail.metric))
            look = look_of(samples, min_samples)
            if look <= self._looked.get(key, -1):
                return False
            self._looked[key] = look
            z, compared = guardrail_z(guardrail, v, c)
        threshold = critical_z(alpha, look)
        if not z > threshold:
            return False
        reason = (
            f"guardrail {guardrail.metric}: {compared} (margin {guardrail.margin:g}); "
            f"z={z:.2f} > {threshold:.2f} at look {look} ({samples} samples per arm, "
            f"alpha {alpha / 2 ** (look + 1):.3g} of {alpha:g})"
        )
        self.stop(experiment.name, variant, guardrail.metric, reason)
        return True

    def stop(self, experiment: str, variant: str, metric: str, reason: str) -> None:
        when_ms = int(self._clock() * 1000)
        if self._store.stop_variant(experiment, variant, reason, when_ms):
            STOPS.labels(experiment, variant, metric).inc()
            log.warning(
                "experiment %r: variant %r stopped, its users go to the control: %s",
                experiment,
                variant,
                reason,
            )


def _definition(experiment: models_pb2.Experiment) -> bytes:
    """The experiment as configured, without the state the server sets on its variants."""
    plain = models_pb2.Experiment()
    plain.CopyFrom(experiment)
    for v in plain.variants:
        v.ClearField("state")
        v.ClearField("stop_reason")
        v.ClearField("stopped_unix_ms")
    return plain.SerializeToString(deterministic=True)


def validate_guardrails(experiment: models_pb2.Experiment, where: str) -> None:
    """Raise InvalidArgument naming the first bad guardrail, control or shadow field."""
    from engine.experiments import ExperimentError

    names = [v.name for v in experiment.variants]
    if experiment.control and experiment.control not in names:
        raise ExperimentError(f"{where}: control {experiment.control!r} names no variant {names}")
    control = experiment.control or (names[0] if names else "")
    if any(v.name == control and v.state == STOPPED for v in experiment.variants):
        raise ExperimentError(f"{where}: the control variant {control!r} cannot be stopped")
    for i, g in enumerate(experiment.guardrails):
        at = f"{where}: guardrails[{i}]"
        if g.metric not in METRICS:
            raise ExperimentError(f"{at}.metric must be one of {list(METRICS)}, got {g.metric!r}")
        if not (math.isfinite(g.alpha) and 0 <= g.alpha < 0.5):
            raise ExperimentError(
                f"{at}.alpha must be in (0, 0.5) (0: {DEFAULT_ALPHA}), got {g.alpha}"
            )
        if g.min_samples < 0:
            raise ExperimentError(f"{at}.min_samples must be >= 0, got {g.min_samples}")
        if not (math.isfinite(g.margin) and 0 <= g.margin < 1):
            raise ExperimentError(f"{at}.margin must be in [0, 1), got {g.margin}")
    for i, s in enumerate(experiment.shadows):
        at = f"{where}: shadows[{i}]"
        if not s.name:
            raise ExperimentError(f"{at}.name is required")
        if not (math.isfinite(s.sample_rate) and 0 < s.sample_rate <= 1):
            raise ExperimentError(f"{at}.sample_rate must be in (0, 1], got {s.sample_rate}")
        if s.ctr_version < 0:
            raise ExperimentError(f"{at}.ctr_version must be >= 0")


def watched(rpc: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Ranking servicer method (inside ``grpc_errors``): when its experiment has
    guardrails its latency and outcome count for the arm that served it, and when it has
    shadows the request is offered to them (engine.shadow). A success names its arm in the
    response; a failure's arm is routed again (failures are rare)."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                response = method(self, request, context)
            except Exception as exc:
                _record_failure(self, rpc, request, exc, time.perf_counter() - start)
                raise
            if response.experiment:
                _answered(self, rpc, request, response, time.perf_counter() - start)
            return response

        return wrapper

    return decorate


def _answered(servicer: Any, rpc: str, request: Any, response: Any, seconds: float) -> None:
    store = servicer.experiments
    experiment = store.find(response.experiment) if store is not None else None
    if experiment is None:
        return
    if experiment.guardrails:
        store.guardrails.record_request(experiment, response.variant, seconds, False)
    if experiment.shadows and store.shadows is not None:
        store.shadows.offer(rpc, experiment, request, response)


def _record(servicer: Any, name: str, variant: str, seconds: float, failed: bool) -> None:
    store = servicer.experiments
    if store is None:
        return
    experiment = store.find(name)
    if experiment is not None and experiment.guardrails:
        store.guardrails.record_request(experiment, variant, seconds, failed)


def _record_failure(servicer: Any, rpc: str, request: Any, exc: Exception, seconds: float) -> None:
    from engine.grpc_adapter import status_of
    from engine.models.profiles import UserSegment
    from engine.routing import route

    store = servicer.experiments
    if store is None or not request.user_id:
        return
    if isinstance(exc, ServingError) and exc.code not in ERROR_CODES:
        return
    if status_of(exc) not in ERROR_CODES:
        return
    try:
        chosen = route(
            store,
            servicer.settings,
            rpc,
            request.user_id,
            UserSegment(servicer._profiles(), request.user_id),
        )
    except Exception:  # the failure itself is what the caller hears about
        return
    if chosen.experiment:
        _record(servicer, chosen.experiment, chosen.variant, seconds, True)


class _Appends(Protocol):
    def append(self, events: Sequence[feedback_pb2.FeedbackEvent]) -> None: ...


def tap_feedback(feedback_log: _Appends, monitor: GuardrailMonitor) -> None:
    """Let ``monitor`` see every batch ``feedback_log`` appended durably (LogEvents' events,
    as logged); a failed append raises before the monitor sees anything."""
    append = feedback_log.append

    def observed(events: Sequence[feedback_pb2.FeedbackEvent]) -> None:
        append(events)
        monitor.observe(events)

    feedback_log.append = observed  # type: ignore[method-assign]
