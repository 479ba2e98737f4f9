"""Per-RPC exploration settings (``Settings.exploration``): which policy picks each slot, how
much traffic explores, and the uncertainty Thompson sampling gives new candidates."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# RPCs whose decisions are logged, as Settings.decision_sample_rates keys them.
RPCS = ("recommend", "rank_ads", "plan")


class ExplorationSettings(BaseModel):
    """Exploration of one RPC (``REACHRANK_EXPLORATION='{"rank_ads": {"method": "epsilon"}}'``).

    A request explores with probability ``budget`` (the exploration traffic); in an exploring
    request each slot in ``slots`` (all when empty) is picked by ``method``, the others
    greedily. Every logged propensity is the marginal over that coin."""

    method: Literal["none", "epsilon", "thompson"] = "none"
    """``epsilon``: with probability ``epsilon`` a uniformly random remaining candidate, else
    the best; ``thompson``: the best under one draw of each candidate's Beta posterior."""
    epsilon: float = Field(0.1, ge=0.0, le=1.0)
    """Share of exploring slots that epsilon-greedy fills at random."""
    budget: float = Field(1.0, ge=0.0, le=1.0)
    """Share of requests that explore at all."""
    slots: list[int] = Field(default_factory=list)
    """1-based slots that explore (empty: every slot)."""
    known_strength: float = Field(200.0, gt=0)
    """Thompson: Beta concentration (pseudo-impressions) around the calibrated pCTR of a
    candidate the CTR model knows."""
    new_strength: float = Field(4.0, gt=0)
    """Thompson: the same for a candidate new to the model (no row in its item table): a
    wide prior, so new items and ads get shown and learned."""
    draws: int = Field(256, ge=8, le=100_000)
    """Thompson: Monte Carlo draws that estimate each shown candidate's propensity."""

    @property
    def active(self) -> bool:
        return (
            self.method != "none"
            and self.budget > 0
            and (self.method == "thompson" or self.epsilon > 0)
        )


# Share of each RPC's decisions logged by default (Settings.decision_sample_rates): the rate
# whose cost bench.ope measured within 10% of the serving CPU per request (BENCHMARKS.md).
DEFAULT_SAMPLE_RATES: dict[str, float] = {"recommend": 0.1, "rank_ads": 0.1, "plan": 1.0}
