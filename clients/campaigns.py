"""SDK side of the Campaigns service: the request builder, the typed plan, and the feedback
events that record a plan's contacts and held-out controls (for contact caps and
`reachrank campaign-report`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reachrank.v1 import campaigns_pb2

from clients.convert import consent_value
from clients.types import FeedbackEvent


@dataclass(frozen=True)
class CampaignPlan:
    user_ids: tuple[str, ...]
    treatments: tuple[str, ...]
    expected_uplift: tuple[float, ...]
    expected_value: tuple[float, ...]
    # The held-out control group: not to be contacted; with the treatment each would have had.
    control_user_ids: tuple[str, ...]
    control_treatments: tuple[str, ...]
    summary: dict[str, object] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    # Which consent mode answered: "personalised" or "context_only" (no per-user state read).
    consent_mode: str = ""


def campaign_request(
    campaign_id: str,
    *,
    fraction: float | None = None,
    budget: float | None = None,
    costs: Mapping[str, float] | None = None,
    value_per_conversion: float = 0.0,
    control_fraction: float | None = None,
    max_contacts: int = 0,
    window_hours: float = 0.0,
    quiet_hours_after_purchase: float = 0.0,
    user_ids: Iterable[str] = (),
    segments: Iterable[str] = (),
    model: str = "",
    consent: str | None = None,
) -> campaigns_pb2.CampaignRequest:
    """``consent`` ("personalised", "context_only"; None: the server's default): of every
    candidate; context_only plans from no per-user state (needs ``user_ids``, no segments)."""
    request = campaigns_pb2.CampaignRequest(
        campaign_id=campaign_id,
        model=model,
        costs=dict(costs or {}),
        value_per_conversion=value_per_conversion,
        caps=campaigns_pb2.ContactCaps(
            max_contacts=max_contacts,
            window_hours=window_hours,
            quiet_hours_after_purchase=quiet_hours_after_purchase,
        ),
        user_ids=list(user_ids),
        segments=list(segments),
        consent=consent_value(consent),
    )
    if fraction is not None:
        request.fraction = fraction
    if budget is not None:
        request.budget = budget
    if control_fraction is not None:
        request.control_fraction = control_fraction
    return request


def campaign_plan(response: campaigns_pb2.CampaignResponse) -> CampaignPlan:
    s = response.summary
    summary: dict[str, object] = {
        name: getattr(s, name)
        for name in (
            "customers",
            "eligible",
            "contacts",
            "controls",
            "cost",
            "expected_conversions",
            "expected_revenue",
            "roi",
            "capped",
            "no_consent",
            "unknown_users",
        )
    }
    summary["contacts_per_treatment"] = dict(s.contacts_per_treatment)
    return CampaignPlan(
        user_ids=tuple(response.user_ids),
        treatments=tuple(response.treatments),
        expected_uplift=tuple(response.expected_uplift),
        expected_value=tuple(response.expected_value),
        control_user_ids=tuple(response.control_user_ids),
        control_treatments=tuple(response.control_treatments),
        summary=summary,
        models=tuple(f"{m.name}/{m.version}" for m in response.models),
        consent_mode=response.consent_mode,
    )


def plan_events(plan: CampaignPlan, campaign_id: str, ts_unix_ms: int = 0) -> list[FeedbackEvent]:
    """A ``contact`` event per contacted user and a ``holdout`` event per control user (item =
    treatment, context campaign), to log once the campaign is sent."""
    context = {"campaign": campaign_id}
    return [
        FeedbackEvent(u, t, "contact", ts_unix_ms, context=context)
        for u, t in zip(plan.user_ids, plan.treatments, strict=True)
    ] + [
        FeedbackEvent(u, t, "holdout", ts_unix_ms, context=context)
        for u, t in zip(plan.control_user_ids, plan.control_treatments, strict=True)
    ]
