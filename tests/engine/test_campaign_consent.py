"""Consent on Campaigns.Plan: a context_only plan reads no per-user state (no profile row is
looked up or featurised, the live-history store's read counter stands still), logs nothing
that names its users (decision log, feedback log and server logs searched byte-wise, Parquet
decompressed), scores every candidate alike (the model's unknown user), still honours
opt-outs, and says which mode answered. A real server over the real trainer's profiles and
uplift bundles, called through the real client and CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

import engine.campaigns as campaigns
from clients import ClientOptions, ReachRankClient
from clients.cli import main as cli
from clients.errors import ReachRankError
from engine.observability import configure_logging
from engine.server import start_server
from engine.settings import Settings
from tests.campaign_data import campaign_setup
from tests.engine.privacy_helpers import traces

pytestmark = pytest.mark.slow  # trains profiles and uplift models first

SUBJECTS = [f"consent-subject-{i:04d}-5b7e" for i in range(12)]


def test_a_context_only_plan_reads_no_profile_and_logs_no_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = campaign_setup()
    calls = {"candidates": 0, "features": 0}
    for name in calls:
        real = getattr(campaigns, f"_{name}" if name == "candidates" else name)

        def counting(*args: object, _real: object = real, _name: str = name) -> object:
            calls[_name] += 1
            return _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(campaigns, "_candidates" if name == "candidates" else name, counting)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", json_format=True)
    feedback, decisions = tmp_path / "feedback", tmp_path / "decisions"
    running = start_server(
        Settings(repo=setup.repo, port=0, feedback_dir=feedback, decision_log_dir=decisions)
    )
    address = f"127.0.0.1:{running.port}"
    live = running.registry.live_history
    opted = "consent-optout-0000-5b7e"
    try:
        with ReachRankClient(address, ClientOptions(max_attempts=1)) as c:
            personal = c.plan_campaign("consent", fraction=0.5, control_fraction=0.2)
            assert personal.consent_mode == "personalised"
            assert calls["candidates"] == 1 and calls["features"] >= 1  # the counters count
            personalised_calls = dict(calls)
            assert c.log_events([{"user_id": opted, "item_id": "", "event": "opt_out"}]) == 1
            reads = live.reads if live is not None else 0

            plan = c.plan_campaign(
                "consent",
                fraction=1.0,
                control_fraction=0.25,
                user_ids=[*SUBJECTS, opted],
                consent="context_only",
            )
            assert plan.consent_mode == "context_only"
            assert calls == personalised_calls  # no profile looked up or featurised
            assert plan.models == tuple(m for m in personal.models if m.startswith("uplift"))
            chosen = set(plan.user_ids) | set(plan.control_user_ids)
            assert chosen and chosen <= set(SUBJECTS)  # the opted-out user is left out
            assert plan.summary["no_consent"] == 1 and plan.summary["unknown_users"] == 0
            assert len(set(plan.expected_uplift)) == 1  # nobody is told apart
            assert live is None or live.reads == reads

            for bad, says in (
                ({"segments": ["champions"]}, "segments"),
                ({}, "user_ids"),
            ):
                with pytest.raises(ReachRankError) as caught:
                    c.plan_campaign("consent", fraction=1.0, consent="context_only", **bad)
                assert says in caught.value.message and "context_only" in caught.value.message
        out = CliRunner().invoke(
            cli,
            [
                "client", "campaign", "--target", address, "--campaign-id", "consent",
                "--fraction", "1", "--user", SUBJECTS[0], "--consent", "context_only", "--json",
            ],
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["consent_mode"] == "context_only"
    finally:
        running.stop(0)
        root.handlers[:], level = saved
        root.setLevel(level)

    assert calls == personalised_calls  # nor by the CLI's context-only plan
    # The personalised plan was logged (the decision log works); the context-only ones not.
    assert traces(personal.user_ids[0], [decisions])
    for subject in SUBJECTS:
        assert traces(subject, [decisions, feedback]) == []
    assert not any(s in capsys.readouterr().err for s in SUBJECTS)
