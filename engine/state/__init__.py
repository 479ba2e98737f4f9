"""The online state every replica must agree on (live user histories, campaign contact counts),
behind one small interface with two backings: embedded (this process only, the default) and
Redis (shared by every replica that names the same ``--state-store redis://HOST:PORT/DB``).

:func:`open_state_store` picks the backing from ``Settings.state_store``. Both give a history
store with ``observe(events)`` / ``since(user_id, cut_ms)`` (:class:`HistoryStore`, what the CTR
and sequence models read) and a :class:`engine.contacts.ContactStore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from engine.contacts import ContactStore, InProcessContacts
from engine.live_history import LiveHistory
from engine.settings import Settings


class HistoryStore(Protocol):
    def observe(self, events: Iterable[Any]) -> None:
        """Record impression and click events (``user_id``, ``item_id``, ``event``,
        ``ts_unix_ms``; 0 means now); other events are ignored."""

    def since(self, user_id: str, cut_ms: int) -> list[tuple[str, bool]]:
        """(item id, is a click) of the user's events strictly after ``cut_ms``, oldest first."""


class StateStore(Protocol):
    histories: HistoryStore
    contacts: ContactStore

    def close(self) -> None:
        """Flush what is pending (bounded wait) and release connections."""

    def forget(self, user_id: str) -> dict[str, int]:
        """Erase everything kept about the user (histories, contacts, purchase and consent
        times); returns what was erased per kind."""


class EmbeddedState:
    """This process's memory: what one server logged (and replayed from its own log)."""

    def __init__(self) -> None:
        self.histories: LiveHistory = LiveHistory()
        self.contacts: InProcessContacts = InProcessContacts()

    def close(self) -> None:
        pass

    def forget(self, user_id: str) -> dict[str, int]:
        return {
            "state_histories": self.histories.forget(user_id),
            "state_contacts": self.contacts.forget(user_id),
        }


def open_state_store(settings: Settings) -> StateStore:
    """The store ``settings.state_store`` names: ``embedded`` or ``redis://HOST:PORT/DB``."""
    url = settings.state_store
    if url == "embedded":
        return EmbeddedState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from engine.state.redis_store import RedisState

        return RedisState(
            url,
            cache_s=settings.state_cache_ms / 1000,
            timeout_s=settings.state_timeout_ms / 1000,
            retry_s=settings.state_retry_s,
        )
    raise ValueError(f"state store must be 'embedded' or redis://HOST:PORT/DB, got {url!r}")
