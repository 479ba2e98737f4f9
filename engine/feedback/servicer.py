"""The ``reachrank.v1.Feedback`` servicer: validate a batch of events, stamp missing times,
append them to the log and answer once they are on disk."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import grpc
from reachrank.v1 import feedback_pb2, feedback_pb2_grpc

from engine.contacts import ContactStore
from engine.errors import InvalidArgument
from engine.feedback.log import FeedbackLog
from engine.feedback.parquet import FIXED_COLUMNS
from engine.grpc_adapter import grpc_errors
from engine.privacy.policy import PrivacyPolicy
from engine.state import HistoryStore

EVENTS = ("impression", "click", "purchase", "contact", "holdout", "opt_out", "opt_in")
# Consent events concern the user, not an item.
USER_EVENTS = ("opt_out", "opt_in")


def validate_event(event: feedback_pb2.FeedbackEvent, where: str) -> None:
    """Raise InvalidArgument naming the first bad field, e.g. ``events[3].event``."""
    for name in ("user_id", "item_id"):
        if not getattr(event, name) and not (name == "item_id" and event.event in USER_EVENTS):
            raise InvalidArgument(f"{where}.{name} is required")
    if event.event not in EVENTS:
        raise InvalidArgument(f"{where}.event must be one of {list(EVENTS)}, got {event.event!r}")
    for name in ("price", "value"):
        number = getattr(event, name)
        if not math.isfinite(number) or number < 0:
            raise InvalidArgument(f"{where}.{name} must be finite and >= 0, got {number}")
    for name in ("ts_unix_ms", "position", "model_version"):
        if getattr(event, name) < 0:
            raise InvalidArgument(f"{where}.{name} must be >= 0")
    for key in event.context:
        # A context key named like a column would be renamed in Parquet; say so now instead.
        if not key or key in FIXED_COLUMNS:
            raise InvalidArgument(f"{where}.context[{key!r}]: empty or reserved key")


def loggable_events(
    privacy: PrivacyPolicy, events: Sequence[feedback_pb2.FeedbackEvent]
) -> Sequence[feedback_pb2.FeedbackEvent]:
    """The events as the log may hold them: keyed by the engine's id (the pseudonym at rest),
    and without the user id (or dropped, as configured) for users without consent or
    forgotten. A consent event (opt_out/opt_in) keeps its id unless the user is forgotten.
    Returns ``events`` itself when nothing changes (no copy on the common path)."""
    kept: list[feedback_pb2.FeedbackEvent] = []
    changed = False
    for event in events:
        subject = privacy.resolve(event.user_id, event.consent)
        if subject.use_state or (
            event.event in USER_EVENTS and not privacy.tombstones.contains(subject.user_id)
        ):
            if subject.user_id != event.user_id:
                event.user_id = subject.user_id
                changed = True
            kept.append(event)
            continue
        changed = True
        if privacy.drop_unconsented or event.event in USER_EVENTS:
            continue
        event.user_id = ""  # anonymised: per-item counts still reach the trainer
        kept.append(event)
    return kept if changed else events


def validate_request(request: feedback_pb2.LogEventsRequest, max_events: int) -> None:
    if len(request.events) > max_events:
        raise InvalidArgument(
            f"events: {len(request.events)} events in one call, at most {max_events}"
        )
    for i, event in enumerate(request.events):
        validate_event(event, f"events[{i}]")


class FeedbackServicer(feedback_pb2_grpc.FeedbackServicer):
    def __init__(
        self,
        log: FeedbackLog,
        max_events: int,
        live: HistoryStore | None = None,
        contacts: ContactStore | None = None,
        privacy: PrivacyPolicy | None = None,
        ads: Any = None,
    ) -> None:
        self.log = log
        self.max_events = max_events
        self.live = live
        self.contacts = contacts
        self.privacy = privacy
        self.ads = ads  # engine.ads.gate: bills logged charges to campaign budgets

    @grpc_errors
    def LogEvents(
        self, request: feedback_pb2.LogEventsRequest, context: grpc.ServicerContext
    ) -> feedback_pb2.LogEventsResponse:
        validate_request(request, self.max_events)
        now = int(time.time() * 1000)
        for event in request.events:
            if event.ts_unix_ms == 0:
                event.ts_unix_ms = now
        events: Sequence[feedback_pb2.FeedbackEvent] = request.events
        # An erasure waits for the calls that resolved their users before its tombstone.
        with self.privacy.writing() if self.privacy is not None else nullcontext():
            if self.privacy is not None:  # consent, pseudonyms at rest, forgotten users
                events = loggable_events(self.privacy, events)
            self.log.append(events)
            keyed = [e for e in events if e.user_id] if len(events) else events
            if self.live is not None:  # only what is durable feeds the live features
                self.live.observe(keyed)
            if self.contacts is not None:  # campaign contact caps and consent
                self.contacts.observe(keyed)
            if self.ads is not None:
                self.ads.observe(request.events)
        return feedback_pb2.LogEventsResponse(accepted=len(events))
