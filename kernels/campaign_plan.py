"""Campaign plans from uplift estimates: for each customer the treatment with the best expected
incremental value minus cost (or none), under a contact fraction or a budget, with a random
control group held out of the plan. Shared by `reachrank campaign plan` (offline) and the
engine's Campaigns RPC, so both choose identically.

Contract:
- ``uplift[i, t]``: expected incremental conversions of contacting customer ``i`` with
  treatment ``t`` rather than not at all; ``net = uplift * value_per_conversion - cost[t]``.
- A customer is contacted only with a positive net (a "sleeping dog", whose estimate is
  negative, never is) and only where ``eligible`` (contact caps, consent).
- ``fraction``: at most ``round(fraction * n)`` customers, best net first (ties: lower row).
  ``budget``: best net per unit of cost first, while the contacts' total cost stays within it.
- Control group: a ``control_fraction`` share of the *planned* customers, chosen by a hash of
  (campaign, user id) — random, yet stable for a campaign — is kept out and listed with the
  treatment it would have had, so the plan's lift is measured against it. It is not backfilled:
  backfilling would make the held-out customers unlike the contacted ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kernels.hashing import hash_string, hash_strings


class PlanError(ValueError):
    """Plan options that cannot work together (the message says which and why)."""


@dataclass(frozen=True)
class PlanOptions:
    fraction: float | None = None
    budget: float | None = None
    # Cost per contact of each treatment (same order as the uplift columns).
    costs: tuple[float, ...] = ()
    value_per_conversion: float = 1.0
    control_fraction: float = 0.1
    # Seeds the control group: the same campaign holds out the same customers.
    campaign: str = ""

    def check(self, treatments: int) -> None:
        if (self.fraction is None) == (self.budget is None):
            raise PlanError("give exactly one of a contact fraction or a budget")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise PlanError(f"the contact fraction must be in (0, 1], got {self.fraction}")
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget > 0):
            raise PlanError(f"the budget must be a positive number, got {self.budget}")
        if len(self.costs) != treatments:
            raise PlanError(f"{len(self.costs)} costs for {treatments} treatments")
        if any(not (math.isfinite(c) and c >= 0) for c in self.costs):
            raise PlanError(f"costs must be finite and >= 0, got {list(self.costs)}")
        if self.budget is not None and not any(self.costs):
            raise PlanError("a budget needs a cost per contact (every treatment costs 0)")
        if not (math.isfinite(self.value_per_conversion) and self.value_per_conversion > 0):
            raise PlanError(
                f"the value per conversion must be positive, got {self.value_per_conversion}"
            )
        if not 0 <= self.control_fraction < 1:
            raise PlanError(f"the control fraction must be in [0, 1), got {self.control_fraction}")


@dataclass(frozen=True)
class PlanSummary:
    customers: int
    eligible: int
    contacts: int
    controls: int
    cost: float
    expected_conversions: float
    expected_revenue: float
    # (expected revenue - cost) / cost; NaN when the contacts cost nothing.
    roi: float
    contacts_per_treatment: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Rows of the input, best net first: ``contact`` rows are contacted with ``treatment``;
    ``control`` rows are the held-out control group (with the treatment they would have had)."""

    contact: np.ndarray  # int64 row indices
    contact_treatment: np.ndarray  # int64 index into the treatments
    contact_uplift: np.ndarray  # float64 expected incremental conversions
    contact_value: np.ndarray  # float64 expected incremental value minus cost
    control: np.ndarray
    control_treatment: np.ndarray
    control_uplift: np.ndarray
    control_value: np.ndarray
    summary: PlanSummary


def control_draw(user_ids: Sequence[str], campaign: str) -> np.ndarray:
    """A uniform number in [0, 1) per user, fixed for (campaign, user id)."""
    seed = hash_string(campaign) if campaign else 0
    return hash_strings(list(user_ids), seed=seed).astype(np.float64) / 2.0**32


def plan_campaign(
    user_ids: Sequence[str],
    uplift: np.ndarray,
    treatments: Sequence[str],
    options: PlanOptions,
    eligible: np.ndarray | None = None,
) -> Plan:
    """The plan (see the module doc); raises PlanError for inconsistent options."""
    n, t = uplift.shape
    options.check(t)
    if len(treatments) != t or len(user_ids) != n:
        raise PlanError("uplift columns must match treatments and rows must match users")
    costs = np.asarray(options.costs, dtype=np.float64)
    net_all = uplift.astype(np.float64) * options.value_per_conversion - costs[None, :]
    best = np.argmax(net_all, axis=1) if t else np.zeros(n, dtype=np.int64)
    net = net_all[np.arange(n), best]
    ok = np.isfinite(net) & (net > 0)
    if eligible is not None:
        ok &= eligible
    rows = np.flatnonzero(ok)
    cost = costs[best[rows]]
    if options.fraction is not None:
        order = rows[np.lexsort((rows, -net[rows]))]
        chosen = order[: round(options.fraction * n)]
    else:
        ratio = np.where(cost > 0, net[rows] / np.where(cost > 0, cost, 1.0), np.inf)
        order = np.lexsort((rows, -net[rows], -ratio))
        ordered, ordered_cost = rows[order], cost[order]
        # The contacts pay, the held-out controls do not: walk the order and keep whoever fits.
        draw = control_draw([user_ids[i] for i in ordered], options.campaign)
        held = draw < options.control_fraction
        spend = np.where(held, 0.0, ordered_cost)
        chosen = ordered[np.cumsum(spend) <= options.budget + 1e-9]
    draw = control_draw([user_ids[i] for i in chosen], options.campaign)
    is_control = draw < options.control_fraction
    contact, control = chosen[~is_control], chosen[is_control]
    value = net
    summary = _summary(n, int(ok.sum()), contact, control, best, uplift, costs, options, treatments)
    return Plan(
        contact=contact,
        contact_treatment=best[contact],
        contact_uplift=uplift[contact, best[contact]].astype(np.float64),
        contact_value=value[contact],
        control=control,
        control_treatment=best[control],
        control_uplift=uplift[control, best[control]].astype(np.float64),
        control_value=value[control],
        summary=summary,
    )


def _summary(
    n: int,
    eligible: int,
    contact: np.ndarray,
    control: np.ndarray,
    best: np.ndarray,
    uplift: np.ndarray,
    costs: np.ndarray,
    options: PlanOptions,
    treatments: Sequence[str],
) -> PlanSummary:
    cost = float(costs[best[contact]].sum())
    conversions = float(uplift[contact, best[contact]].sum())
    revenue = conversions * options.value_per_conversion
    counts = np.bincount(best[contact], minlength=len(treatments))
    return PlanSummary(
        customers=n,
        eligible=eligible,
        contacts=len(contact),
        controls=len(control),
        cost=cost,
        expected_conversions=conversions,
        expected_revenue=revenue,
        roi=(revenue - cost) / cost if cost > 0 else math.nan,
        contacts_per_treatment={tr: int(c) for tr, c in zip(treatments, counts, strict=True)},
    )
