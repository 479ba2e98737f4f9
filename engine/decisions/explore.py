"""Slot-by-slot choice of what to show, greedy or exploring, with the propensity of each pick.

Slot p takes one of the candidates the earlier slots left. The greedy pick is the best by
``score x value`` (ties: the lower index). A request explores with probability ``budget``;
then each exploring slot is filled by epsilon-greedy (a uniformly random remaining candidate
with probability epsilon) or by Thompson sampling (the best under one draw of each candidate's
Beta posterior around its calibrated score, wide for candidates new to the model; a fresh draw
per slot).

The propensity logged for slot p is P(this candidate in slot p | the earlier slots' picks),
marginal over the request's exploration coin: exact for greedy and epsilon-greedy; for
Thompson the win probability is estimated from ``draws`` Monte Carlo draws (the request's own
draw among them when it explored, so a pick's estimate is never 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.decisions.config import ExplorationSettings

# Calibrated scores are clipped this far inside (0, 1) to parameterise a Beta.
_EPS = 1e-4


@dataclass(frozen=True)
class Choice:
    order: np.ndarray  # candidate indices, slot order (slot 1 first)
    propensity: np.ndarray  # float64 per slot
    explored: bool
    method: str  # "exact" | "monte_carlo:<draws>"


def greedy_order(key: np.ndarray) -> np.ndarray:
    """Indices by key descending, ties by index (the pipelines' own order)."""
    return np.lexsort((np.arange(len(key)), -key))


def choose(
    score: np.ndarray,
    k: int,
    config: ExplorationSettings | None,
    rng: np.random.Generator,
    value: np.ndarray | None = None,
    known: np.ndarray | None = None,
    propensities: bool = True,
) -> Choice:
    """The ``min(k, n)`` picks among ``n`` candidates with calibrated ``score`` (ranked by
    ``score x value``; ``value`` is the bid in an auction); ``known`` marks candidates the
    model has seen (Thompson's prior strength). Without ``propensities`` (a decision that is
    not logged) a request that does not explore skips their computation (Thompson's Monte
    Carlo draws) and reports 1."""
    score = np.asarray(score, dtype=np.float64)
    n = len(score)
    k = min(k, n)
    key = score if value is None else score * value
    if config is None or not config.active or k == 0:
        return Choice(greedy_order(key)[:k], np.ones(k), False, "exact")
    explored = bool(rng.random() < config.budget)
    if not explored and not propensities:
        return Choice(greedy_order(key)[:k], np.ones(k), False, "exact")
    exploring_slot = np.ones(k, dtype=bool)
    if config.slots:
        exploring_slot[:] = False
        for s in config.slots:
            if 1 <= s <= k:
                exploring_slot[s - 1] = True
    if config.method == "epsilon":
        return _epsilon(key, k, config, rng, explored, exploring_slot)
    return _thompson(score, value, k, config, rng, explored, exploring_slot, known)


def _epsilon(
    key: np.ndarray,
    k: int,
    config: ExplorationSettings,
    rng: np.random.Generator,
    explored: bool,
    exploring_slot: np.ndarray,
) -> Choice:
    n, eps, budget = len(key), config.epsilon, config.budget
    ranked = greedy_order(key)
    taken = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    propensity = np.empty(k)
    cursor = 0
    for p in range(k):
        while taken[ranked[cursor]]:
            cursor += 1
        best = int(ranked[cursor])
        left = n - p
        pick = best
        if explored and exploring_slot[p] and rng.random() < eps:
            pick = int(np.flatnonzero(~taken)[rng.integers(left)])
        if exploring_slot[p]:
            is_best = float(pick == best)
            propensity[p] = budget * ((1 - eps) * is_best + eps / left) + (1 - budget) * is_best
        else:
            propensity[p] = 1.0
        order[p] = pick
        taken[pick] = True
    return Choice(order, propensity, explored, "exact")


def _thompson(
    score: np.ndarray,
    value: np.ndarray | None,
    k: int,
    config: ExplorationSettings,
    rng: np.random.Generator,
    explored: bool,
    exploring_slot: np.ndarray,
    known: np.ndarray | None,
) -> Choice:
    n, budget, draws = len(score), config.budget, config.draws
    p = np.clip(score, _EPS, 1 - _EPS)
    strength = np.full(n, config.known_strength)
    if known is not None:
        strength[~known] = config.new_strength
    a, b = p * strength, (1 - p) * strength
    # Slot s of an exploring request takes the best under its own fresh draw (row s), so its
    # propensity given the earlier picks is a plain win probability, which all rows estimate.
    samples = rng.beta(a, b, size=(draws, n))
    if value is not None:
        samples = samples * value
    key = score if value is None else score * value
    ranked = greedy_order(key)
    taken = np.zeros(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    propensity = np.empty(k)
    cursor = 0
    for slot in range(k):
        while taken[ranked[cursor]]:
            cursor += 1
        best = int(ranked[cursor])
        if explored and exploring_slot[slot]:
            pick = int(np.argmax(np.where(taken, -np.inf, samples[slot % draws])))
        else:
            pick = best
        if exploring_slot[slot]:
            masked = np.where(taken[None, :], -np.inf, samples)
            wins = float(np.mean(np.argmax(masked, axis=1) == pick))
            propensity[slot] = budget * wins + (1 - budget) * float(pick == best)
        else:
            propensity[slot] = 1.0
        order[slot] = pick
        taken[pick] = True
    return Choice(order, propensity, explored, f"monte_carlo:{draws}")


def auction_prices(
    pctr: np.ndarray, bid: np.ndarray, order: np.ndarray, reserve: float
) -> np.ndarray:
    """Generalised second price per click along an explored slot order: the winner of a slot
    pays what keeps its expected value above the next slot's, at least the reserve, never more
    than its bid (GSP's rule, applied to the order actually shown)."""
    ev = pctr[order].astype(np.float64) * bid[order]
    p = pctr[order].astype(np.float64)
    nxt = np.append(ev[1:], 0.0)
    charge = np.divide(nxt, p, out=np.zeros_like(nxt), where=p > 0)
    return np.minimum(np.maximum(reserve, charge), bid[order])
