"""Per request: the id the engine keys the user by (raw, or the keyed pseudonym at rest) and
whether their per-user state may be read (consent given and not forgotten).

This is the one place other features ask (the decision log, ad caps, ...):
:meth:`PrivacyPolicy.resolve` once per request, then :attr:`Subject.personalised` (consent mode
of the answer), :attr:`Subject.use_state` (may per-user state be read) and
:attr:`Subject.loggable_user_id` (the id a log may hold: "" without consent or once forgotten).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from reachrank.v1 import privacy_pb2

from engine.privacy.tombstones import Tombstones
from engine.settings import Settings
from kernels.pseudonym import pseudonym, read_key

PERSONALISED = "personalised"
CONTEXT_ONLY = "context_only"
_CONTEXT_ONLY = privacy_pb2.CONSENT_CONTEXT_ONLY
_PERSONALISED = privacy_pb2.CONSENT_PERSONALISED
FORGOTTEN_FILE = "forgotten.parquet"


class Subject(NamedTuple):
    """The user behind one request, resolved once (a tuple: made on every request)."""

    # The id the engine's tables, state and logs key the user by ("" never names a user).
    user_id: str
    # The user allows personalisation (the answer's consent mode).
    personalised: bool
    # Per-user state may be read: personalised and not forgotten (a forgotten user is served
    # as a new one).
    use_state: bool

    @property
    def mode(self) -> str:
        return PERSONALISED if self.personalised else CONTEXT_ONLY

    @property
    def loggable_user_id(self) -> str:
        """The id a log may record for this user: "" unless their state may be used."""
        return self.user_id if self.use_state else ""


def forgotten_path(settings: Settings) -> Path:
    """Where the tombstone set lives: ``forgotten_file``, else ``<repo>/forgotten.parquet``
    (the repository every worker and replica serves, and the trainer's output folder)."""
    return settings.forgotten_file or settings.repo / FORGOTTEN_FILE


class PrivacyPolicy:
    """Consent default, pseudonym key and tombstones of one server."""

    def __init__(
        self,
        forgotten: Path,
        key_file: Path | None = None,
        default_consent: str = PERSONALISED,
        unconsented_events: str = "anonymise",
    ) -> None:
        self.default_personalised = default_consent == PERSONALISED
        self.key = read_key(key_file) if key_file is not None else None
        self.tombstones = Tombstones(forgotten)
        # LogEvents: drop the events of users without consent (else log them without an id).
        self.drop_unconsented = unconsented_events == "drop"
        # Writers of per-user data (LogEvents) in flight, by ticket: an erasure waits for
        # those that may have resolved their users before its tombstone.
        self._tickets = 0
        self._writing: set[int] = set()
        self._written = threading.Condition()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around resolving users and writing their data (what :meth:`drain_writers` waits
        for)."""
        with self._written:
            ticket = self._tickets
            self._tickets += 1
            self._writing.add(ticket)
        try:
            yield
        finally:
            with self._written:
                self._writing.discard(ticket)
                self._written.notify_all()

    def drain_writers(self, timeout_s: float = 30.0) -> bool:
        """Wait until every writer that started before this call is done (later ones see
        the new tombstone); False on timeout."""
        with self._written:
            horizon = self._tickets
            return self._written.wait_for(
                lambda: not any(t < horizon for t in self._writing), timeout_s
            )

    def internal_id(self, user_id: str) -> str:
        """The id the engine keys ``user_id`` by (its pseudonym when ids are pseudonymous)."""
        return pseudonym(self.key, user_id) if self.key is not None else user_id

    def consents(self, consent: int) -> bool:
        if consent == _CONTEXT_ONLY:
            return False
        return consent == _PERSONALISED or self.default_personalised

    def resolve(self, user_id: str, consent: int) -> Subject:
        """The request's subject; costs no hashing unless ids are pseudonymous or someone was
        forgotten."""
        uid = user_id if self.key is None else pseudonym(self.key, user_id)
        personalised = consent == _PERSONALISED or (
            consent != _CONTEXT_ONLY and self.default_personalised
        )
        return Subject(uid, personalised, personalised and not self.tombstones.contains(uid))

    def is_forgotten(self, user_id: str) -> bool:
        """Whether the raw ``user_id`` was forgotten."""
        return self.tombstones.contains(self.internal_id(user_id))


@lru_cache(maxsize=16)
def _shared_policy(
    path: Path, key_file: Path | None, default_consent: str, unconsented_events: str
) -> PrivacyPolicy:
    return PrivacyPolicy(path, key_file, default_consent, unconsented_events)


def policy_for(settings: Settings) -> PrivacyPolicy:
    """The one policy of the servers that share these settings' tombstone file (the Ranking,
    Feedback and Privacy services must see an erasure at the same moment)."""
    return _shared_policy(
        forgotten_path(settings).resolve(),
        settings.pseudonym_key_file,
        settings.default_consent,
        settings.unconsented_events,
    )
