"""A campaign plan without per-user state (``CampaignRequest.consent = CONSENT_CONTEXT_ONLY``):
the candidates are the requested ids as given (no profile is looked up, so segments cannot
apply), and every one scores the uplift the model predicts for a user it knows nothing about
(each feature at its training fill). Contact caps, opt-outs and tombstones still apply: they
are the rules of contacting someone, not personalisation."""

from __future__ import annotations

import numpy as np

from engine.errors import InvalidArgument
from engine.models.uplift import UpliftModel


def context_candidates(user_ids: list[str], segments: list[str], max_users: int) -> list[str]:
    """The candidate ids of a context-only plan (distinct, in request order)."""
    if segments:
        raise InvalidArgument(
            "segments: a context_only plan reads no profile, so it cannot filter by segment; "
            "send the candidate user_ids instead"
        )
    if not user_ids:
        raise InvalidArgument(
            "user_ids: a context_only plan enumerates no profiles; send the candidate user_ids"
        )
    if len(user_ids) > max_users:
        raise InvalidArgument(f"user_ids: {len(user_ids)} users, at most {max_users}")
    return list(dict.fromkeys(user_ids))


def context_uplift(model: UpliftModel, users: int) -> np.ndarray:
    """[users, treatments]: the model's uplift for an unknown user, the same for everyone."""
    schema = model.schema
    unknown = {c.name: [None] for c in (*schema.numeric, *schema.categorical)}
    row = model.score(schema.encode(unknown, 1))
    return np.repeat(np.asarray(row, dtype=np.float64).reshape(1, -1), users, axis=0)
