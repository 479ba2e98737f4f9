"""The SDK's experiment types carry guarded rollout and shadows: a server started by
`reachrank serve --shadow-log-dir` takes an SDK experiment with a guardrail, a control and a
shadow, lists them back, logs the shadow's scores of the SDK's own requests (by their request
ids), and the SDK shows a variant the server stopped, with why and when."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from reachrank.v1 import shadow_pb2

import engine.observability
import engine.server
from clients import Experiment, Guardrail, ReachRankClient, Shadow, Variant
from engine.cli import serve
from engine.feedback.records import scan
from engine.feedback.segments import segments
from engine.server import RunningServer, start_server
from tests.engine.version_helpers import add_version

ADS = [{"ad_id": f"i{i}", "bid": 1.0 + i / 10} for i in range(5)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained_repo: Path) -> Iterator[RunningServer]:
    """The server `reachrank serve` would run for these flags (serve_forever swapped for a
    start that hands the running server back)."""
    root = tmp_path_factory.mktemp("rollout")
    repo = root / "repo"
    shutil.copytree(trained_repo, repo)
    add_version(repo, "ctr", 2)  # the candidate
    started: list[RunningServer] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.server, "serve_forever", lambda s: started.append(start_server(s)))
        patch.setattr(engine.observability, "configure_logging", lambda *a, **k: None)
        args = ["--repo", str(repo), "--port", "0", "--metrics-port", "-1"]
        args += ["--shadow-log-dir", str(root / "shadow-log")]
        args += ["--experiments-file", str(_empty(root / "experiments.json"))]
        result = CliRunner().invoke(serve, args)
    assert result.exit_code == 0, result.output
    (running,) = started
    running.registry.load("ctr", 1)  # version 1 serves
    yield running
    running.stop(0)


def _empty(path: Path) -> Path:
    path.write_text('{"experiments": []}')
    return path


EXPERIMENT = Experiment(
    name="guarded",
    variants=(Variant("control", 1.0, ctr_version=1), Variant("treatment", 1.0, ctr_version=1)),
    rpcs=("rank_ads",),
    salt="guarded",
    guardrails=(
        Guardrail("ctr", alpha=0.05, min_samples=300, margin=0.1),
        Guardrail("p99_latency"),
    ),
    control="control",
    shadows=(Shadow("cand-v2", ctr_version=2, sample_rate=1.0),),
)


def test_guardrails_and_shadows_round_trip_and_the_shadow_is_logged(
    served: RunningServer,
) -> None:
    assert served.settings.shadow_log_dir is not None
    with ReachRankClient(f"127.0.0.1:{served.port}", timeout=30) as client:
        assert client.set_experiment(EXPERIMENT) == EXPERIMENT
        (listed,) = client.experiments()
        assert listed == EXPERIMENT
        answers = {client.rank_ads(f"u{i}", ADS, slots=2).request_id for i in range(6)}
    runner = served.extras.experiments.shadows
    assert runner is not None
    runner.drain()
    records = [
        shadow_pb2.ShadowScores.FromString(payload)
        for path in segments(served.settings.shadow_log_dir).values()
        for payload in scan(path.read_bytes()).payloads
    ]
    assert {r.request_id for r in records} == answers and len(answers) == 6
    assert {(r.shadow, r.shadow_model.version, r.served_model.version) for r in records} == {
        ("cand-v2", 2, 1)
    }


def test_the_sdk_shows_a_stopped_variant(served: RunningServer) -> None:
    with ReachRankClient(f"127.0.0.1:{served.port}", timeout=30) as client:
        client.set_experiment(EXPERIMENT)
        reason = "guardrail ctr: treatment worse than control at look 1"
        assert served.extras.experiments.stop_variant("guarded", "treatment", reason, 1234)
        (listed,) = client.experiments()
        control, treatment = listed.variants
        assert (control.state, control.stop_reason, control.stopped_unix_ms) == ("running", "", 0)
        assert (treatment.state, treatment.stop_reason) == ("stopped", reason)
        assert treatment.stopped_unix_ms == 1234
        assert listed.guardrails == EXPERIMENT.guardrails


def test_an_unknown_variant_state_is_refused_before_sending() -> None:
    from clients.convert import experiment_message

    bad = Experiment("x", (Variant("a", 1.0, state="paused"),))
    with pytest.raises(ValueError, match="'running' or 'stopped'"):
        experiment_message(bad)
