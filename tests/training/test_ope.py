"""The off-policy estimators against values computed by hand, and their unbiasedness and
interval coverage on a bandit whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from training.ope import bootstrap, doubly_robust, ips, on_policy, snips

REWARD = np.array([1.0, 0.0, 1.0, 0.0])
WEIGHT = np.array([2.0, 0.0, 0.5, 1.0])
Q_LOGGED = np.array([0.5, 0.2, 0.4, 0.1])
Q_TARGET = np.array([0.6, 0.3, 0.3, 0.2])


def test_ips_by_hand() -> None:
    e = ips(REWARD, WEIGHT)
    assert e.value == pytest.approx(0.625)
    # Per-decision values 2, 0, 0.5, 0: sample sd 0.946485, se 0.473242, z 1.959964.
    assert e.high - e.value == pytest.approx(1.959964 * 0.946485 / 2, rel=1e-5)
    assert e.effective_n == pytest.approx(3.5**2 / 5.25)


def test_snips_by_hand() -> None:
    assert snips(REWARD, WEIGHT).value == pytest.approx(2.5 / 3.5)


def test_dr_by_hand() -> None:
    # Terms: 0.6 + 2 x 0.5, 0.3 + 0, 0.3 + 0.5 x 0.6, 0.2 + 1 x (-0.1).
    assert doubly_robust(REWARD, WEIGHT, Q_LOGGED, Q_TARGET).value == pytest.approx(0.65)


def test_slots_of_one_decision_are_summed() -> None:
    group, slot = np.array([0, 0, 1, 1]), np.array([1, 2, 1, 2])
    e = ips(REWARD, WEIGHT, group)
    assert e.value == pytest.approx((2.0 + 0.5) / 2) and e.decisions == 2
    # Slot 1: (2 + 0.5) / (2 + 0.5) = 1; slot 2: 0 / 1 = 0.
    assert snips(REWARD, WEIGHT, group, slot).value == pytest.approx(1.0)
    assert on_policy(REWARD, group).value == pytest.approx(1.0)


def bandit(seed: int, n: int = 4000) -> tuple[np.ndarray, ...]:
    """Three arms, logging policy 0.5 / 0.3 / 0.2, target always arm 2 (true value 0.6)."""
    rng = np.random.default_rng(seed)
    means = np.array([0.2, 0.4, 0.6])
    logging = np.array([0.5, 0.3, 0.2])
    arm = rng.choice(3, n, p=logging)
    reward = (rng.random(n) < means[arm]).astype(float)
    weight = (arm == 2) / logging[arm]
    # A biased reward model: DR must still be right because the propensities are.
    q = means + np.array([0.1, -0.1, 0.1])
    return reward, weight, q[arm], np.full(n, q[2])


def test_estimators_are_right_and_intervals_cover_on_a_known_bandit() -> None:
    covered = {"ips": 0, "snips": 0, "dr": 0}
    seeds = 40
    for seed in range(seeds):
        reward, weight, q_logged, q_target = bandit(seed)
        estimates = {
            "ips": ips(reward, weight),
            "snips": snips(reward, weight),
            "dr": doubly_robust(reward, weight, q_logged, q_target),
        }
        for name, e in estimates.items():
            covered[name] += e.covers(0.6)
            assert abs(e.value - 0.6) < 0.1, (name, seed, e)
    # 95% intervals: at least 32 of 40 (the binomial's 1st percentile is 34).
    assert all(c >= 32 for c in covered.values()), covered


def test_a_wrong_propensity_is_caught() -> None:
    reward, weight, *_ = bandit(0, 20000)
    assert not ips(reward, weight * 0.8).covers(0.6)


def test_bootstrap_interval_agrees_with_the_normal_one() -> None:
    reward, weight, *_ = bandit(1)
    normal = ips(reward, weight)
    boot = bootstrap(ips, {"reward": reward, "weight": weight}, resamples=300)
    assert boot.value == normal.value
    assert boot.high - boot.low == pytest.approx(normal.high - normal.low, rel=0.2)
    grouped = bootstrap(
        snips, {"reward": reward, "weight": weight}, group=np.arange(len(reward)) // 2
    )
    assert grouped.low < grouped.value < grouped.high
