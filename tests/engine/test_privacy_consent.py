"""Consent on every request: without consent for personalisation, Recommend and RankAds answer
from context and popularity only (the same answer a stranger gets), read no per-user state
(the live-history store's read counter does not move) and the feedback log keeps nothing that
identifies the user (searched byte-wise, Parquet decompressed); the response says which mode
answered. A real server over the trained repository, called through the real client."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clients import ClientOptions, ReachRankClient
from engine.observability import configure_logging
from engine.server import start_server
from engine.settings import Settings
from tests.engine.privacy_helpers import known_user, traces

ADS = [{"ad_id": f"i{i}", "bid": 1.0 + i / 10} for i in range(8)]


@pytest.mark.parametrize("unconsented_events", ["anonymise", "drop"])
def test_without_consent_no_per_user_state_is_read_and_no_log_names_the_user(
    tmp_path: Path,
    trained_repo: Path,
    capsys: pytest.CaptureFixture[str],
    unconsented_events: str,
) -> None:
    user = known_user(trained_repo)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", json_format=True)
    feedback = tmp_path / "feedback"
    running = start_server(
        Settings(
            repo=trained_repo,
            port=0,
            feedback_dir=feedback,
            unconsented_events=unconsented_events,  # type: ignore[arg-type]
        )
    )
    live = running.registry.live_history
    assert live is not None
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}", ClientOptions(max_attempts=1)) as c:
            # Another (consenting) user's events, so the log and the live store are not empty.
            other = {"user_id": "someone-else", "item_id": "i1", "event": "click"}
            assert c.log_events([other]) == 1

            personal = c.recommend(user, k=5)
            assert personal.strategy == "personalised"
            assert personal.consent_mode == "personalised"
            reads = live.reads
            assert reads > 0  # the counter counts: a personalised answer read the store

            stranger = c.recommend("never-seen-anyone", k=5, context={"device": "mobile"})
            reads = live.reads
            anonymous = c.recommend(user, k=5, context={"device": "mobile"}, consent="context_only")
            assert anonymous.consent_mode == "context_only"
            assert anonymous.strategy == "cold_start_popularity"
            assert anonymous.item_ids == stranger.item_ids
            assert [i.score for i in anonymous.items] == [i.score for i in stranger.items]

            stranger_ads = c.rank_ads("never-seen-anyone", ADS, slots=2, all_ranked=True)
            reads = live.reads
            ads = c.rank_ads(user, ADS, slots=2, all_ranked=True, consent="context_only")
            assert ads.consent_mode == "context_only"
            assert [(a.ad_id, a.pctr) for a in ads.ads] == [
                (a.ad_id, a.pctr) for a in stranger_ads.ads
            ]
            assert live.reads == reads  # neither call read the user's live history

            events = [
                {"user_id": user, "item_id": "i2", "event": e, "consent": "context_only"}
                for e in ("impression", "click", "purchase")
            ]
            written = c.log_events(events)
            assert written == (3 if unconsented_events == "anonymise" else 0)
            assert c.recommend(user, k=5, consent="context_only").consent_mode == "context_only"
            assert live.reads == reads
    finally:
        running.stop(0)
        root.handlers[:], level = saved
        root.setLevel(level)

    # The log was flushed to Parquet at stop; the other user's event is there, ours is not.
    assert traces("someone-else", [feedback])
    assert traces(user, [feedback]) == []
    assert user not in capsys.readouterr().err
