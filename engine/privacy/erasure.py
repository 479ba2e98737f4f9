"""ForgetUser, transport-free: tombstone first (the user is served as a new one from that
moment, on every process that reads the set), then erase them from the live histories and the
state store, the feedback log's WAL and Parquet, and the repository's bundle tables; audit it.

Idempotent: a second call finds nothing left and erases zero everywhere (it still re-runs the
erasure, so a first call that failed half-way is completed by a retry)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidArgument
from engine.feedback.log import FeedbackLog
from engine.privacy.audit import append_audit
from engine.privacy.policy import PrivacyPolicy
from engine.privacy.repository import mask_in_repository
from engine.state import StateStore

log = logging.getLogger(__name__)
AUDIT_FILE = "privacy-audit.jsonl"


@dataclass
class Erasure:
    """Where a forgotten user's data lives in one server (what ForgetUser reaches)."""

    policy: PrivacyPolicy
    repo: Path
    audit_path: Path
    state: StateStore | None = None
    feedback: FeedbackLog | None = None
    # Other logs keyed by user (the decision log, ...): each erases the ids it is given and
    # returns counts per place.
    extra: list[Callable[[list[str]], dict[str, int]]] = field(default_factory=list)
    # `serve --workers`: waits until the sibling workers' logs are swept too.
    siblings: Callable[[int], dict[str, int]] | None = None

    def forget(self, user_id: str, who: str) -> tuple[dict[str, int], bool]:
        """Erase ``user_id`` (as the request carries it) everywhere; (counts per place,
        whether it was forgotten already)."""
        if not user_id:
            raise InvalidArgument("user_id is required")
        uid = self.policy.internal_id(user_id)
        # Both forms: rows written before ids were pseudonymised carry the raw id.
        ids = list(dict.fromkeys([uid, user_id]))
        added = any([self.policy.tombstones.add(u) for u in ids])
        # LogEvents calls that resolved the user before the tombstone finish writing first.
        self.policy.drain_writers()
        erased: dict[str, int] = {}
        if self.state is not None:
            for u in ids:
                for place, n in self.state.forget(u).items():
                    erased[place] = erased.get(place, 0) + n
        if self.feedback is not None:
            erased.update(self.feedback.erase_users(ids))
        if self.siblings is not None:
            erased.update(self.siblings(len(self.policy.tombstones)))
        for erase in self.extra:
            erased.update(erase(ids))
        tombstones = self.policy.tombstones
        erased["repository"] = mask_in_repository(
            self.repo, ids, tombstones.digest, skip=[tombstones.path]
        )
        append_audit(
            self.audit_path,
            {
                "action": "forget_user",
                "who": who,
                "subject": tombstones.digest(uid),
                "already_forgotten": not added,
                "erased": erased,
            },
        )
        log.info("ForgetUser by %s: erased %s", who, erased)
        return erased, not added
