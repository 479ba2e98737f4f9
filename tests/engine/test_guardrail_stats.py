"""The guardrails' statistics without a server: the sequential test keeps the false-stop rate
below alpha over many seeds (where testing at alpha on every look would not), finds a clearly
worse variant at once, and the monitor stops a variant on each metric and only then."""

from __future__ import annotations

import numpy as np
import pytest
from reachrank.v1 import feedback_pb2, models_pb2

from engine.experiments import ExperimentError, ExperimentStore, assign, validate
from engine.guardrails import (
    STOPPED,
    critical_z,
    look_of,
    mean_lower_z,
    proportion_lower_z,
    proportion_worse_z,
)

ALPHA = 0.05
LOOKS = 6  # at n, 2n, ... 32n


def _sequential_ctr_stops(
    seeds: int, ctr_control: float, ctr_variant: float, n: int, spend: bool
) -> np.ndarray:
    """Per seed: the look at which a CTR guardrail stopped the variant (-1: never)."""
    stopped = np.full(seeds, -1)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        sizes = n * 2 ** np.arange(LOOKS)
        steps = np.diff(np.concatenate([[0], sizes]))
        clicks_c = np.cumsum(rng.binomial(steps, ctr_control))
        clicks_v = np.cumsum(rng.binomial(steps, ctr_variant))
        for look, size in enumerate(sizes):
            z = proportion_lower_z(
                int(clicks_v[look]), int(size), int(clicks_c[look]), int(size), 0
            )
            threshold = critical_z(ALPHA, look) if spend else critical_z(2 * ALPHA, 0)
            if z > threshold:
                stopped[seed] = look
                break
    return stopped


def test_an_equal_variant_is_stopped_in_under_alpha_of_seeds() -> None:
    stops = _sequential_ctr_stops(2000, 0.08, 0.08, 200, spend=True)
    rate = float((stops >= 0).mean())
    assert rate <= ALPHA, rate
    # Testing every look at the full alpha stops equal variants far more often: the spending
    # is what keeps the rate down.
    naive = float((_sequential_ctr_stops(2000, 0.08, 0.08, 200, spend=False) >= 0).mean())
    assert naive > ALPHA + 0.03 and naive > 2 * rate, (naive, rate)


def test_a_much_worse_variant_is_stopped_within_the_first_looks() -> None:
    stops = _sequential_ctr_stops(300, 0.10, 0.05, 400, spend=True)
    assert (stops >= 0).mean() == 1.0
    assert (stops <= 2).mean() >= 0.99  # by 4x min_samples


def test_looks_and_the_alpha_they_spend() -> None:
    assert [look_of(n, 100) for n in (99, 100, 199, 200, 399, 400, 1600)] == [-1, 0, 0, 1, 1, 2, 4]
    assert critical_z(0.05, 0) == pytest.approx(1.95996, abs=1e-4)  # alpha/2 one-sided
    assert critical_z(0.05, 1) == pytest.approx(2.24140, abs=1e-4)  # alpha/4
    assert sum(0.05 / 2 ** (k + 1) for k in range(60)) <= 0.05


def test_the_z_statistics_on_hand_computed_cases() -> None:
    # Agresti-Caffo: (10+1)/(100+2) vs (20+1)/(100+2).
    pv, pc = 11 / 102, 21 / 102
    se = np.sqrt(pv * (1 - pv) / 102 + pc * (1 - pc) / 102)
    assert proportion_lower_z(10, 100, 20, 100, 0.0) == pytest.approx((pc - pv) / se)
    assert proportion_worse_z(20, 100, 10, 100, 0.0) == pytest.approx((pc - pv) / se)
    # A margin moves the bound: 10% worse tolerated.
    assert proportion_lower_z(10, 100, 20, 100, 0.1) < proportion_lower_z(10, 100, 20, 100, 0.0)
    # Means: variant [0, 2] (mean 1, var 2), control [2, 4] (mean 3, var 2), Welch.
    z = mean_lower_z(2.0, 4.0, 2, 6.0, 20.0, 2, 0.0)
    assert z == pytest.approx(2.0 / np.sqrt(2 / 2 + 2 / 2))
    assert mean_lower_z(0.0, 0.0, 5, 0.0, 0.0, 5, 0.0) == 0.0  # no spread, no evidence


def _experiment(*guardrails: models_pb2.Guardrail) -> models_pb2.Experiment:
    return models_pb2.Experiment(
        name="e",
        rpcs=["rank_ads"],
        enabled=True,
        variants=[
            models_pb2.Variant(name="control", weight=1),
            models_pb2.Variant(name="treatment", weight=1, ctr_version=2),
        ],
        guardrails=list(guardrails),
    )


def _state(store: ExperimentStore) -> tuple[int, str]:
    treatment = store.get("e").variants[1]
    return treatment.state, treatment.stop_reason


def _requests(store: ExperimentStore, variant: str, n: int, failed: int, seconds: float) -> None:
    rng = np.random.default_rng(len(variant))
    for i in range(n):
        jitter = seconds * (1 + 0.1 * rng.random())
        store.guardrails.record_request(store.get("e"), variant, jitter, i < failed)


def test_error_rate_guardrail_stops_only_a_failing_variant() -> None:
    store = ExperimentStore(
        [_experiment(models_pb2.Guardrail(metric="error_rate", min_samples=200))]
    )
    _requests(store, "control", 200, 1, 0.002)
    _requests(store, "treatment", 200, 2, 0.002)
    assert _state(store)[0] != STOPPED  # 1% vs 0.5%: no evidence at 200 each
    _requests(store, "control", 200, 1, 0.002)
    _requests(store, "treatment", 200, 60, 0.002)
    state, reason = _state(store)
    assert state == STOPPED and "error rate" in reason and "look 1" in reason


def test_p99_latency_guardrail() -> None:
    guard = models_pb2.Guardrail(metric="p99_latency", min_samples=500, margin=0.2)
    store = ExperimentStore([_experiment(guard)])
    _requests(store, "control", 500, 0, 0.002)
    _requests(store, "treatment", 500, 0, 0.0021)  # within the 20% margin
    assert _state(store)[0] != STOPPED
    _requests(store, "control", 500, 0, 0.002)
    _requests(store, "treatment", 500, 0, 0.004)  # every new request twice as slow
    state, reason = _state(store)
    assert state == STOPPED and "p99" in reason


def _events(variant: str, impressions: int, clicks: int, revenue: float = 0.0) -> list:
    event = feedback_pb2.FeedbackEvent
    out = [event(event="impression", experiment="e", variant=variant) for _ in range(impressions)]
    out += [event(event="click", experiment="e", variant=variant) for _ in range(clicks)]
    if revenue:
        out.append(event(event="purchase", experiment="e", variant=variant, value=revenue))
    return out


def test_ctr_and_revenue_guardrails_from_feedback() -> None:
    store = ExperimentStore([_experiment(models_pb2.Guardrail(metric="ctr", min_samples=400))])
    store.guardrails.observe(_events("control", 400, 40) + _events("treatment", 400, 38))
    assert _state(store)[0] != STOPPED
    store.guardrails.observe(_events("control", 400, 40) + _events("treatment", 400, 5))
    assert _state(store)[0] == STOPPED and "CTR" in _state(store)[1]

    guard = models_pb2.Guardrail(metric="revenue_per_impression", min_samples=300)
    store = ExperimentStore([_experiment(guard)])
    for _ in range(60):  # 60 purchases of 5.0 over 300 impressions vs 60 of 1.0
        store.guardrails.observe(_events("control", 5, 0, 5.0) + _events("treatment", 5, 0, 1.0))
    assert _state(store)[0] == STOPPED and "revenue" in _state(store)[1]


def test_feedback_of_other_experiments_and_events_is_ignored() -> None:
    store = ExperimentStore([_experiment(models_pb2.Guardrail(metric="ctr", min_samples=10))])
    other = [feedback_pb2.FeedbackEvent(event="impression", experiment="x", variant="control")]
    store.guardrails.observe(other * 50 + _events("treatment", 0, 0))
    assert store.guardrails.stats("x", "control").impressions == 0


def test_a_stopped_variants_users_are_served_by_the_control() -> None:
    experiment = _experiment()
    users = [f"u{i}" for i in range(200)]
    before = {u: assign(experiment, u) for u in users}
    store = ExperimentStore([experiment])
    assert store.stop_variant("e", "treatment", "test", 1234)
    assert not store.stop_variant("e", "treatment", "again", 5678)  # stopped once
    stopped = store.get("e")
    assert (stopped.variants[1].stop_reason, stopped.variants[1].stopped_unix_ms) == ("test", 1234)
    after = {u: assign(stopped, u) for u in users}
    assert set(after.values()) == {"control"}
    assert {u for u in users if before[u] == "control"} <= {
        u for u in users if after[u] == "control"
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"guardrails": [models_pb2.Guardrail(metric="ctr_uplift")]}, "guardrails[0].metric"),
        ({"guardrails": [models_pb2.Guardrail(metric="ctr", alpha=0.7)]}, "guardrails[0].alpha"),
        ({"guardrails": [models_pb2.Guardrail(metric="ctr", margin=1.5)]}, "guardrails[0].margin"),
        ({"guardrails": [models_pb2.Guardrail(metric="ctr", min_samples=-1)]}, "min_samples"),
        ({"control": "nobody"}, "control 'nobody'"),
        ({"shadows": [models_pb2.Shadow(name="s", sample_rate=0)]}, "shadows[0].sample_rate"),
        ({"shadows": [models_pb2.Shadow(sample_rate=0.5)]}, "shadows[0].name"),
    ],
)
def test_bad_guardrails_are_refused_naming_the_field(change: dict, message: str) -> None:
    experiment = _experiment()
    for key, value in change.items():
        if isinstance(value, list):
            getattr(experiment, key).extend(value)
        else:
            setattr(experiment, key, value)
    with pytest.raises(ExperimentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(experiment)


def test_the_control_cannot_be_stopped() -> None:
    experiment = _experiment()
    experiment.variants[0].state = STOPPED
    with pytest.raises(ExperimentError, match="control variant 'control' cannot be stopped"):
        validate(experiment)
