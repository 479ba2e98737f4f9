"""Logs never carry raw user features, user ids of requests, or tokens: a real server at DEBUG
with JSON logs serves valid, invalid, unauthenticated and failing calls that all carry marked
values, and none of the marks reaches the log stream."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clients import ClientOptions, ReachRankClient
from clients.errors import ReachRankError
from engine.observability import configure_logging
from engine.server import start_server
from engine.settings import Settings

FEATURE = "feat-7c1d-SENSITIVE"
USER = "user-5e2a-SENSITIVE"
TOKEN = "tok-4f60-SENSITIVE"
WRONG_TOKEN = "tok-91b3-SENSITIVE"


def test_logs_never_print_user_features_ids_or_tokens(
    tmp_path: Path, trained_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", json_format=True)  # the access log and every debug line on
    running = start_server(
        Settings(repo=trained_repo, port=0, feedback_dir=tmp_path / "feedback", auth_tokens=TOKEN)
    )
    target = f"127.0.0.1:{running.port}"
    try:
        with ReachRankClient(target, ClientOptions(token=TOKEN, max_attempts=1)) as client:
            client.recommend(USER, k=5, context={"device": FEATURE})
            client.rank_ads("u1", [{"ad_id": "i1", "bid": 1.0, "features": {"f": FEATURE}}])
            client.profile(USER)
            events = [
                {"user_id": USER, "item_id": "i1", "event": "click", "context": {"p": FEATURE}}
            ]
            assert client.log_events(events) == 1
            for bad in (
                lambda: client.recommend(USER, k=0, context={"device": FEATURE}),
                lambda: client.rank_ads(USER, [{"ad_id": FEATURE, "bid": float("nan")}]),
                lambda: client.log_events(
                    [{"user_id": USER, "item_id": FEATURE, "event": FEATURE}]
                ),
            ):
                with pytest.raises(ReachRankError) as refused:
                    bad()
                assert refused.value.code.name == "INVALID_ARGUMENT"

            # A failure inside the model whose message quotes the request's values.
            ctr = running.registry.get("ctr")
            real_score = ctr.score  # what RankAds calls (pCTR and pCVR in one run)

            def leaky_score(cat, num):
                raise ValueError(f"cannot score row {FEATURE} of {USER}: {cat!r} {num!r}")

            ctr.score = leaky_score
            try:
                with pytest.raises(ReachRankError) as failed:
                    client.rank_ads(USER, [{"ad_id": "i1", "bid": 1.0, "features": {"f": FEATURE}}])
                assert failed.value.code.name == "INTERNAL"
            finally:
                ctr.score = real_score

        with ReachRankClient(target, ClientOptions(token=WRONG_TOKEN, max_attempts=1)) as client:
            with pytest.raises(ReachRankError) as unauthenticated:
                client.recommend(USER, k=5, context={"device": FEATURE})
            assert unauthenticated.value.code.name == "UNAUTHENTICATED"
    finally:
        running.stop(0)
        root.handlers[:], level = saved
        root.setLevel(level)

    logs = capsys.readouterr().err
    # The log did record these calls: the failure (type and stack) and the access lines.
    assert "RankAds failed: ValueError (message withheld)" in logs
    assert "RankAds INTERNAL" in logs and "Recommend INVALID_ARGUMENT" in logs
    assert "refused /reachrank.v1.Ranking/Recommend: no valid bearer token" in logs
    for mark in (FEATURE, USER, TOKEN, WRONG_TOKEN, "SENSITIVE"):
        assert mark not in logs, f"{mark} reached the logs"
