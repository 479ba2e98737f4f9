"""Exploration's picks and the propensities it logs: exact for greedy and epsilon-greedy
(checked against the formula and against how often each pick really happens), Monte Carlo for
Thompson sampling (against the real frequencies, within the estimate's error)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.decisions.config import ExplorationSettings
from engine.decisions.explore import auction_prices, choose

SCORES = np.array([0.30, 0.10, 0.20, 0.05, 0.15])


def frequencies(config: ExplorationSettings, runs: int, **kw: object) -> tuple[np.ndarray, dict]:
    """How often each candidate took slot 1, and the propensity logged for each one."""
    rng = np.random.default_rng(0)
    counts = np.zeros(len(SCORES))
    logged: dict[int, list[float]] = {}
    for _ in range(runs):
        c = choose(SCORES, 2, config, rng, **kw)
        counts[c.order[0]] += 1
        logged.setdefault(int(c.order[0]), []).append(float(c.propensity[0]))
    return counts / runs, logged


def test_greedy_without_exploration_has_propensity_one() -> None:
    c = choose(SCORES, 3, None, np.random.default_rng(0))
    assert c.order.tolist() == [0, 2, 4]
    assert c.propensity.tolist() == [1.0, 1.0, 1.0]
    assert not c.explored and c.method == "exact"


def test_epsilon_greedy_propensities_are_exact_and_match_frequencies() -> None:
    config = ExplorationSettings(method="epsilon", epsilon=0.2, budget=0.5)
    freq, logged = frequencies(config, 20000)
    # Slot 1: the best with 0.5 * (0.8 + 0.2 / 5) + 0.5; any other with 0.5 * 0.2 / 5.
    expected = np.array([0.92, 0.02, 0.02, 0.02, 0.02])
    for item, values in logged.items():
        assert values == pytest.approx([expected[item]] * len(values))
    assert np.allclose(freq, expected, atol=4 * np.sqrt(expected * (1 - expected) / 20000))


def test_epsilon_second_slot_is_conditional_on_the_first() -> None:
    config = ExplorationSettings(method="epsilon", epsilon=1.0, budget=1.0)
    c = choose(SCORES, 2, config, np.random.default_rng(3))
    assert c.propensity.tolist() == pytest.approx([1 / 5, 1 / 4])


def test_only_the_configured_slots_explore() -> None:
    config = ExplorationSettings(method="epsilon", epsilon=1.0, slots=[2])
    rng = np.random.default_rng(1)
    for _ in range(50):
        c = choose(SCORES, 2, config, rng)
        assert c.order[0] == 0 and c.propensity[0] == 1.0
        assert c.propensity[1] == pytest.approx(1 / 4)


def test_thompson_monte_carlo_propensities_match_frequencies() -> None:
    config = ExplorationSettings(method="thompson", known_strength=20.0, draws=512, budget=0.7)
    freq, logged = frequencies(config, 4000)
    for item, values in logged.items():
        estimate = float(np.mean(values))
        # The MC estimate (512 draws) and the observed frequency (4000 runs) both carry error.
        assert abs(estimate - freq[item]) < 0.03 + 4 * np.sqrt(freq[item] / 4000), item
    assert logged and all(v > 0 for vs in logged.values() for v in vs)


def test_thompson_new_candidates_get_a_wider_prior() -> None:
    config = ExplorationSettings(method="thompson", known_strength=500.0, new_strength=2.0)
    known = np.ones(len(SCORES), dtype=bool)
    shown_known, _ = frequencies(config, 1500, known=known)
    known[3] = False  # candidate 3 (pCTR 0.05) is new to the model
    shown_new, _ = frequencies(config, 1500, known=known)
    assert shown_known[3] < 0.01 < shown_new[3]


def test_thompson_ranks_an_auction_by_sampled_pctr_times_bid() -> None:
    config = ExplorationSettings(method="thompson", budget=0.0)  # budget 0: inactive
    bids = np.array([1.0, 10.0, 1.0, 1.0, 1.0])
    c = choose(SCORES, 1, config, np.random.default_rng(0), value=bids)
    assert c.order.tolist() == [1]  # 0.10 x 10 beats 0.30 x 1


def test_gsp_prices_along_an_explored_order() -> None:
    pctr = np.array([0.2, 0.1, 0.4])
    bid = np.array([1.0, 2.0, 1.0])
    # Order shown: ad 1 (ev 0.2), ad 0 (ev 0.2), ad 2 (ev 0.4: more than the slot above it).
    price = auction_prices(pctr, bid, np.array([1, 0, 2]), reserve=0.05)
    assert price.tolist() == pytest.approx([0.2 / 0.1, 1.0, 0.05])


def test_an_unlogged_request_that_does_not_explore_skips_the_propensities() -> None:
    config = ExplorationSettings(method="thompson", budget=0.5)
    rng = np.random.default_rng(2)
    choices = [choose(SCORES, 2, config, rng, propensities=False) for _ in range(40)]
    greedy = [c for c in choices if not c.explored]
    assert greedy and all(c.order.tolist() == [0, 2] for c in greedy)
    assert all(c.propensity.tolist() == [1.0, 1.0] for c in greedy)
    assert any(c.explored for c in choices)
