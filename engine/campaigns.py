"""Online campaign plans (transport-free): score the users the server profiles with an uplift
model, leave out those the contact caps or consent forbid, and plan with the same rule as
`reachrank campaign plan` (:func:`kernels.campaign_plan.plan_campaign`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.contacts import ContactStore
from engine.errors import FailedPrecondition, InvalidArgument
from engine.models.base import ModelId
from engine.models.profiles import ProfilesModel
from engine.models.uplift import UpliftModel
from engine.privacy.campaign import context_candidates, context_uplift
from kernels.campaign_plan import PlanError, PlanOptions, PlanSummary, plan_campaign

DEFAULT_CONTROL_FRACTION = 0.1
_HOUR_MS = 3_600_000
# Rows scored per onnxruntime call: bounds the feature matrix a plan over every user needs.
SCORE_CHUNK = 65_536


@dataclass(frozen=True)
class ContactCaps:
    max_contacts: int = 0  # 0: no cap
    window_hours: float = 0.0
    quiet_hours_after_purchase: float = 0.0

    @property
    def any(self) -> bool:
        return self.max_contacts > 0 or self.quiet_hours_after_purchase > 0

    def check(self) -> None:
        if self.max_contacts < 0:
            raise InvalidArgument(f"caps.max_contacts must be >= 0, got {self.max_contacts}")
        if self.max_contacts > 0 and not (
            math.isfinite(self.window_hours) and self.window_hours > 0
        ):
            raise InvalidArgument(
                "caps.window_hours must be > 0 when caps.max_contacts is set "
                f"(got {self.window_hours})"
            )
        q = self.quiet_hours_after_purchase
        if not (math.isfinite(q) and q >= 0):
            raise InvalidArgument(f"caps.quiet_hours_after_purchase must be >= 0, got {q}")


@dataclass(frozen=True)
class CampaignQuery:
    campaign_id: str = ""
    fraction: float | None = None
    budget: float | None = None
    costs: Mapping[str, float] = field(default_factory=dict)
    value_per_conversion: float = 0.0  # 0: the model's
    control_fraction: float = DEFAULT_CONTROL_FRACTION
    caps: ContactCaps = field(default_factory=ContactCaps)
    user_ids: Sequence[str] = ()
    segments: Sequence[str] = ()


@dataclass(frozen=True)
class CampaignResult:
    user_ids: list[str]
    treatments: list[str]
    expected_uplift: list[float]
    expected_value: list[float]
    control_user_ids: list[str]
    control_treatments: list[str]
    summary: PlanSummary
    capped: int
    no_consent: int
    unknown_users: int
    models: list[ModelId]


def _candidates(
    profiles: ProfilesModel, query: CampaignQuery, max_users: int
) -> tuple[np.ndarray, int]:
    """Profile rows of the candidate users and how many requested ids are unknown."""
    if query.user_ids:
        if len(query.user_ids) > max_users:
            raise InvalidArgument(f"user_ids: {len(query.user_ids)} users, at most {max_users}")
        found = [profiles.user_row.get(u) for u in dict.fromkeys(query.user_ids)]
        rows = np.array([r for r in found if r is not None], dtype=np.int64)
        unknown = sum(r is None for r in found)
    else:
        rows, unknown = np.arange(len(profiles.user_ids), dtype=np.int64), 0
    if query.segments:
        rows = rows[profiles.members(query.segments)[rows]]
    return rows, unknown


def features(model: UpliftModel, profiles: ProfilesModel, rows: np.ndarray) -> np.ndarray:
    """The model's feature matrix for profile ``rows``, from the profiles' columns."""
    columns: dict[str, Any] = {}
    numeric = {n: j for j, n in enumerate(profiles.feature_names)}
    missing = []
    for col in model.schema.numeric:
        if col.name in numeric:
            columns[col.name] = profiles.features[rows, numeric[col.name]]
        else:
            missing.append(col.name)
    for col in model.schema.categorical:
        if col.name in profiles.attributes:
            values = profiles.attributes[col.name]
            columns[col.name] = [values[i] for i in rows]
        else:
            missing.append(col.name)
    if missing:
        raise FailedPrecondition(
            f"model {model.id.name} needs feature column(s) {missing} that the profiles "
            f"({profiles.id.name}) lack; retrain it on profile columns or serve matching profiles"
        )
    return model.schema.encode(columns, len(rows))


def _eligible(
    contacts: ContactStore | None, caps: ContactCaps, ids: list[str], now_ms: int
) -> tuple[np.ndarray, int, int]:
    """(allowed mask, capped, no consent)."""
    allowed = np.ones(len(ids), dtype=np.bool_)
    if contacts is None:
        if caps.any:
            raise FailedPrecondition(
                "contact caps are counted from the feedback log: start the server with a "
                "feedback directory (--feedback-dir)"
            )
        return allowed, 0, 0
    consent = ~contacts.opted_out(ids)
    capped = np.zeros(len(ids), dtype=np.bool_)
    if caps.max_contacts > 0:
        since = now_ms - int(caps.window_hours * _HOUR_MS)
        capped |= contacts.contacts_since(ids, since) >= caps.max_contacts
    if caps.quiet_hours_after_purchase > 0:
        last = contacts.last_purchase_ms(ids)
        capped |= (last > 0) & (now_ms - last < caps.quiet_hours_after_purchase * _HOUR_MS)
    allowed &= consent & ~capped
    return allowed, int((capped & consent).sum()), int((~consent).sum())


def plan_online(
    model: UpliftModel,
    profiles: ProfilesModel,
    contacts: ContactStore | None,
    query: CampaignQuery,
    max_users: int,
    now_ms: int | None = None,
    forgotten: Callable[[list[str]], list[bool]] | None = None,
    context_only: bool = False,
) -> CampaignResult:
    """The campaign plan over the users ``profiles`` knows (see the module doc). ``forgotten``
    marks erased users (engine.privacy): never planned, counted as without consent.
    ``context_only``: no per-user state read (:mod:`engine.privacy.campaign`)."""
    unknown_costs = sorted(set(query.costs) - set(model.treatments))
    if unknown_costs:
        raise InvalidArgument(
            f"costs: unknown treatment(s) {unknown_costs}; model {model.id.name} has "
            f"{model.treatments}"
        )
    query.caps.check()
    if context_only:
        ids, unknown = context_candidates(query.user_ids, query.segments, max_users), 0
    else:
        rows, unknown = _candidates(profiles, query, max_users)
        ids = [profiles.user_ids[i] for i in rows]
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    allowed, capped, no_consent = _eligible(contacts, query.caps, ids, now_ms)
    if forgotten is not None:
        gone = np.array(forgotten(ids), dtype=np.bool_) & allowed
        allowed &= ~gone
        no_consent += int(gone.sum())
    if context_only:
        uplift = context_uplift(model, len(ids))
    else:
        uplift = np.zeros((len(rows), len(model.treatments)))
        for lo in range(0, len(rows), SCORE_CHUNK):
            part = rows[lo : lo + SCORE_CHUNK]
            uplift[lo : lo + len(part)] = model.score(features(model, profiles, part))
    options = PlanOptions(
        fraction=query.fraction,
        budget=query.budget,
        costs=tuple(float(query.costs.get(t, 0.0)) for t in model.treatments),
        value_per_conversion=query.value_per_conversion or model.value_per_conversion,
        control_fraction=query.control_fraction,
        campaign=query.campaign_id,
    )
    try:
        plan = plan_campaign(ids, uplift, model.treatments, options, eligible=allowed)
    except PlanError as exc:
        raise InvalidArgument(str(exc)) from None
    names = model.treatments
    return CampaignResult(
        user_ids=[ids[i] for i in plan.contact],
        treatments=[names[t] for t in plan.contact_treatment],
        expected_uplift=plan.contact_uplift.tolist(),
        expected_value=plan.contact_value.tolist(),
        control_user_ids=[ids[i] for i in plan.control],
        control_treatments=[names[t] for t in plan.control_treatment],
        summary=plan.summary,
        capped=capped,
        no_consent=no_consent,
        unknown_users=unknown,
        models=[model.id] if context_only else [model.id, profiles.id],
    )
