"""The ``reachrank.v1.Campaigns`` servicer: request to :class:`engine.campaigns.CampaignQuery`,
:func:`engine.campaigns.plan_online`, plan to columns."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import grpc
from reachrank.v1 import campaigns_pb2, campaigns_pb2_grpc, ranking_pb2

from engine.campaigns import DEFAULT_CONTROL_FRACTION, CampaignQuery, ContactCaps, plan_online
from engine.contacts import ContactStore
from engine.decisions.log import DecisionLog
from engine.decisions.plan import plan_decision
from engine.errors import FailedPrecondition
from engine.grpc_adapter import grpc_errors
from engine.models.profiles import ProfilesModel
from engine.models.uplift import UpliftModel
from engine.privacy.policy import CONTEXT_ONLY, PERSONALISED, policy_for
from engine.settings import Settings

if TYPE_CHECKING:  # the registry imports every model kind; the server imports this first
    from engine.registry import ModelRegistry

SERVICE_NAME = campaigns_pb2.DESCRIPTOR.services_by_name["Campaigns"].full_name
DEFAULT_MODEL = "uplift"


def query_of(request: campaigns_pb2.CampaignRequest) -> CampaignQuery:
    caps = request.caps
    return CampaignQuery(
        campaign_id=request.campaign_id,
        fraction=request.fraction if request.HasField("fraction") else None,
        budget=request.budget if request.HasField("budget") else None,
        costs=dict(request.costs),
        value_per_conversion=request.value_per_conversion,
        control_fraction=(
            request.control_fraction
            if request.HasField("control_fraction")
            else DEFAULT_CONTROL_FRACTION
        ),
        caps=ContactCaps(caps.max_contacts, caps.window_hours, caps.quiet_hours_after_purchase),
        user_ids=list(request.user_ids),
        segments=list(request.segments),
    )


class CampaignsServicer(campaigns_pb2_grpc.CampaignsServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        settings: Settings,
        contacts: ContactStore | None,
        decisions: DecisionLog | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.contacts = contacts
        self.decisions = decisions

    @grpc_errors
    def Plan(
        self, request: campaigns_pb2.CampaignRequest, context: grpc.ServicerContext
    ) -> campaigns_pb2.CampaignResponse:
        name = request.model or DEFAULT_MODEL
        model = self.registry.get(name)
        if not isinstance(model, UpliftModel):
            raise FailedPrecondition(f"model {name!r} is not an uplift model")
        profiles = self.registry.get(self.settings.profiles_model)
        if not isinstance(profiles, ProfilesModel):
            raise FailedPrecondition(
                f"model {self.settings.profiles_model!r} is not a profiles model"
            )
        query = query_of(request)
        policy = policy_for(self.settings)
        personalised = policy.consents(request.consent)  # else: no per-user state, no log
        result = plan_online(
            model,
            profiles,
            self.contacts,
            query,
            self.settings.max_audience,
            forgotten=policy.tombstones.mask,  # erased users: never planned
            context_only=not personalised,
        )
        if self.decisions is not None and personalised:
            plan_decision(self.decisions, query, result)
        s = result.summary
        return campaigns_pb2.CampaignResponse(
            user_ids=result.user_ids,
            treatments=result.treatments,
            expected_uplift=result.expected_uplift,
            expected_value=result.expected_value,
            control_user_ids=result.control_user_ids,
            control_treatments=result.control_treatments,
            summary=campaigns_pb2.CampaignSummary(
                customers=s.customers,
                eligible=s.eligible,
                contacts=s.contacts,
                controls=s.controls,
                cost=s.cost,
                expected_conversions=s.expected_conversions,
                expected_revenue=s.expected_revenue,
                roi=s.roi if math.isfinite(s.roi) else math.nan,
                contacts_per_treatment=s.contacts_per_treatment,
                capped=result.capped,
                no_consent=result.no_consent,
                unknown_users=result.unknown_users,
            ),
            models=[
                ranking_pb2.ModelRef(
                    name=m.name, version=m.version, kind=m.kind, provider=m.provider
                )
                for m in result.models
            ],
            consent_mode=PERSONALISED if personalised else CONTEXT_ONLY,
        )


def add_campaigns_to_server(
    server: grpc.Server,
    registry: ModelRegistry,
    settings: Settings,
    contacts: ContactStore | None,
    decisions: DecisionLog | None = None,
) -> str:
    """Add the Campaigns service; returns its full name (for reflection)."""
    campaigns_pb2_grpc.add_CampaignsServicer_to_server(
        CampaignsServicer(registry, settings, contacts, decisions), server
    )
    return SERVICE_NAME
