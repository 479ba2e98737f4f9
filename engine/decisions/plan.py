"""A Campaigns.Plan decision for the decision log: the planned users in plan order (position
1 = best expected value) with their treatments, and the held-out controls (position 0, no
treatment). The control draw is uniform per (campaign, user), so a planned user was contacted
with probability 1 - control_fraction and held out with control_fraction: those are the
logged propensities. Controls keep the treatment they would have had."""

from __future__ import annotations

import numpy as np

from engine.campaigns import CampaignQuery, CampaignResult
from engine.decisions.log import DecisionLog


def plan_decision(decisions: DecisionLog, query: CampaignQuery, result: CampaignResult) -> None:
    draft = decisions.draft("plan")
    if draft is None:
        return
    contacts, controls = len(result.user_ids), len(result.control_user_ids)
    draft.ids = [*result.user_ids, *result.control_user_ids]
    draft.scores = np.array([*result.expected_uplift, *([0.0] * controls)], dtype=np.float32)
    draft.shown = np.arange(contacts)
    draft.propensity = np.full(contacts, 1.0 - query.control_fraction)
    draft.treatments = [*result.treatments, *result.control_treatments]
    draft.control_propensity = query.control_fraction
    decisions.submit(draft, "", {}, None, result.models, query.campaign_id)
