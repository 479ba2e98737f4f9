"""Splitting one load over several generator processes and merging what they measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from clients.cli import main
from clients.latency import OK, Samples, summarise
from clients.loadtest import LoadSettings, arrival_times
from clients.options import ClientOptions
from clients.processes import merge, run_in_processes, shares
from clients.workload import health_workload

from .conftest import FakeServer


def test_concurrency_is_split_evenly() -> None:
    parts = shares(LoadSettings(duration=1.0, concurrency=5, seed=7), 2)
    assert [part.concurrency for part in parts] == [3, 2]
    assert [part.seed for part in parts] == [7, 8]
    with pytest.raises(ValueError, match="cannot be split"):
        shares(LoadSettings(duration=1.0, concurrency=2), 3)


def test_constant_rate_streams_interleave() -> None:
    parts = shares(LoadSettings(duration=1.0, rate=300.0, arrivals="constant"), 3)
    assert [part.rate for part in parts] == [100.0, 100.0, 100.0]
    rng = np.random.default_rng(0)
    merged = np.sort(
        np.concatenate([arrival_times(p.rate, 1.0, p.arrivals, rng, p.phase) for p in parts])
    )
    # Together they are one constant stream of 300/s, not bursts of three.
    assert len(merged) == 300
    np.testing.assert_allclose(np.diff(merged), 1 / 300)


def test_merge_adds_samples_and_weights_cpu() -> None:
    def result(latency_ms: float, count: int, cpu: float):
        samples = Samples()
        for n in range(count):
            samples.add(n / count, latency_ms / 1e3, OK)
        return summarise(samples, 1.0, None, cpu), samples

    summary, samples = merge(
        [result(1.0, 30, 100.0), result(3.0, 10, 20.0)], LoadSettings(duration=1.0, concurrency=2)
    )
    assert summary.requests == len(samples) == 40
    assert summary.achieved_rps == 40.0
    assert summary.client_cpu_us_per_request == pytest.approx((30 * 100 + 10 * 20) / 40)
    assert summary.max_ms == pytest.approx(3.0)


def test_two_processes_share_a_closed_loop(fake_server: FakeServer) -> None:
    seen = []
    summary, _ = run_in_processes(
        fake_server.target,
        ClientOptions(timeout=10.0),
        health_workload(),
        LoadSettings(duration=0.5, warmup=0.1, concurrency=2, progress_interval=0.2),
        processes=2,
        on_progress=seen.append,
    )
    assert summary.requests > 0
    assert summary.errors == {}
    assert seen and seen[-1].completed > 0


def test_processes_run_against_the_fake_ranking(fake_server: FakeServer) -> None:
    result = CliRunner().invoke(
        main,
        ["loadtest", "--target", fake_server.target, "--rpc", "recommend", "--rate", "100", "--arrivals", "constant",
         "--duration", "0.5", "--warmup", "0", "--processes", "2", "--quiet", "--json", "-"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["config"]["processes"] == 2
    assert payload["requests"] == 50
    # Each process tags its calls "<run id>-<n>": two processes, two run ids.
    run_ids = {
        call.metadata["x-request-id"].rsplit("-", 1)[0] for call in fake_server.servicer.calls
    }
    assert len(run_ids) == 2


def test_unsplittable_concurrency_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["loadtest", "--concurrency", "2", "--processes", "3"])
    assert result.exit_code == 2
    assert "cannot be split" in result.output


def test_a_failing_process_fails_the_run(closed_port: int) -> None:
    result = CliRunner().invoke(
        main,
        ["loadtest", "--target", f"127.0.0.1:{closed_port}", "--timeout", "0.3",
         "--concurrency", "2", "--processes", "2", "--duration", "1", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "generator process" in result.output and "failed" in result.output
