"""The ``reachrank.v1.Privacy`` servicer (admin only: see :data:`engine.security.ADMIN_METHODS`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from reachrank.v1 import privacy_pb2, privacy_pb2_grpc

from engine.feedback.log import FeedbackLog
from engine.grpc_adapter import grpc_errors
from engine.privacy.audit import principal
from engine.privacy.erasure import AUDIT_FILE, Erasure
from engine.privacy.policy import policy_for
from engine.privacy.sweep import Sweeper, is_worker_log
from engine.settings import Settings
from engine.state import StateStore

SERVICE_NAME = privacy_pb2.DESCRIPTOR.services_by_name["Privacy"].full_name


class PrivacyServicer(privacy_pb2_grpc.PrivacyServicer):
    def __init__(self, erasure: Erasure) -> None:
        self.erasure = erasure

    @grpc_errors
    def ForgetUser(
        self, request: privacy_pb2.ForgetUserRequest, context: grpc.ServicerContext
    ) -> privacy_pb2.ForgetUserResponse:
        erased, already = self.erasure.forget(request.user_id, principal(context))
        return privacy_pb2.ForgetUserResponse(erased=erased, already_forgotten=already)


def add_privacy_to_server(
    server: grpc.Server,
    settings: Settings,
    state: StateStore | None,
    feedback: FeedbackLog | None,
    erasers: Sequence[Callable[[list[str]], dict[str, int]]] = (),
) -> str:
    """Add the Privacy service over this server's state and logs; returns its full name (for
    reflection). ``erasers``: other logs keyed by user (the decision log): each erases the ids
    it is given (raw and pseudonymous forms) and returns counts per place."""
    policy = policy_for(settings)
    audit = settings.privacy_audit_log or policy.tombstones.path.parent / AUDIT_FILE
    erasure = Erasure(policy, settings.repo, audit, state, feedback, list(erasers))
    if feedback is not None and is_worker_log(feedback.directory):  # serve --workers
        sweeper = Sweeper(feedback, policy.tombstones.path, audit)
        erasure.siblings = sweeper.wait_siblings
    privacy_pb2_grpc.add_PrivacyServicer_to_server(PrivacyServicer(erasure), server)
    return SERVICE_NAME
