"""The load generator: arrival schedules, summaries, sweeps, and runs against the fake server."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner

from clients.channel import open_aio_channel
from clients.cli import main
from clients.latency import NOT_SENT, OK, Samples, Summary, summarise
from clients.loadtest import LoadSettings, Progress, arrival_times, run_load
from clients.options import ClientOptions
from clients.sweep import SweepSettings, sweep_rates
from clients.workload import MixSettings, recommend_workload, synthetic_ids

from .conftest import FakeServer, start_fake_server


def test_constant_arrivals_are_evenly_spaced() -> None:
    times = arrival_times(100.0, 2.0, "constant", np.random.default_rng(0))
    assert len(times) == 200
    np.testing.assert_allclose(np.diff(times), 0.01)


def test_poisson_arrivals_have_exponential_gaps() -> None:
    times = arrival_times(1000.0, 20.0, "poisson", np.random.default_rng(1))
    gaps = np.diff(times)
    assert times[0] == 0.0 and times[-1] < 20.0
    assert np.all(gaps >= 0)
    # 20,000 expected arrivals: the count is within 4 standard deviations (sqrt(20000) ≈ 141).
    assert abs(len(times) - 20_000) < 4 * 141
    # An exponential distribution's standard deviation equals its mean.
    assert gaps.mean() == pytest.approx(1e-3, rel=0.03)
    assert gaps.std() == pytest.approx(1e-3, rel=0.05)


def test_summary_by_hand() -> None:
    samples = Samples()
    for n in range(1, 101):  # 1..100 ms
        samples.add(intended=n / 100, latency=n / 1000, status=OK)
    samples.add(0.5, 2.0, "DEADLINE_EXCEEDED")
    samples.add(0.6, 0.0, NOT_SENT)
    summary = summarise(samples, duration=2.0, offered_rps=51.0)
    assert summary.requests == 102
    assert summary.ok == 100
    assert summary.achieved_rps == 50.0
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)
    assert summary.max_ms == pytest.approx(100.0)
    assert summary.errors == {"DEADLINE_EXCEEDED": 1, NOT_SENT: 1}
    assert summary.error_count == 2


def test_window_drops_warmup_and_drain() -> None:
    samples = Samples()
    for t in (0.1, 0.9, 1.0, 1.5, 3.0):
        samples.add(t, 0.001, OK)
    assert samples.window(1.0, 3.0).intended == [1.0, 1.5]


def test_settings_need_exactly_one_mode() -> None:
    with pytest.raises(ValueError):
        LoadSettings(duration=1.0)
    with pytest.raises(ValueError):
        LoadSettings(duration=1.0, concurrency=2, rate=10.0)


def _run(
    fake: FakeServer, settings: LoadSettings, **options
) -> tuple[Summary, Samples, list[Progress]]:
    workload = recommend_workload(synthetic_ids("u", 20), MixSettings(k=2, pool_size=16))
    seen: list[Progress] = []

    async def scenario():
        channel = open_aio_channel(fake.target, ClientOptions(**options))
        try:
            # Connected before the clock starts, as the command does: on a busy machine the
            # handshake alone could outlast a short test run.
            await channel.channel_ready()
            return await run_load(channel, workload, settings, [("x-load", "1")], seen.append)
        finally:
            await channel.close()

    summary, samples = asyncio.run(scenario())
    return summary, samples, seen


def test_closed_loop_against_the_fake_server(fake_server: FakeServer) -> None:
    settings = LoadSettings(duration=0.6, warmup=0.2, concurrency=4, progress_interval=0.2)
    summary, samples, progress = _run(fake_server, settings)
    assert summary.ok == summary.requests > 0
    assert summary.errors == {}
    assert summary.p50_ms <= summary.p99_ms <= summary.max_ms
    assert summary.client_cpu_us_per_request is not None and summary.client_cpu_us_per_request > 0
    # Warm-up calls reached the server but are not in the summary.
    assert len(fake_server.servicer.calls) > summary.requests
    assert min(samples.intended) >= 0.0
    assert progress and progress[-1].completed > 0
    metadata = fake_server.servicer.calls[-1].metadata
    assert metadata["x-load"] == "1"
    assert "x-request-id" in metadata


def test_open_loop_sends_every_scheduled_request(fake_server: FakeServer) -> None:
    settings = LoadSettings(duration=0.5, warmup=0.1, rate=200.0, arrivals="constant")
    summary, _, _ = _run(fake_server, settings)
    assert summary.requests == 100
    assert summary.offered_rps == 200.0
    assert len(fake_server.servicer.calls) == 120


def test_errors_are_counted_by_status_code(fake_server: FakeServer) -> None:
    fake_server.servicer.abort_with = (grpc.StatusCode.NOT_FOUND, "unknown user")
    summary, _, _ = _run(fake_server, LoadSettings(duration=0.3, concurrency=2))
    assert summary.ok == 0
    assert summary.errors == {"NOT_FOUND": summary.requests}
    assert math.isnan(summary.p99_ms)


def test_sends_later_than_the_deadline_are_counted_not_sent(fake_server: FakeServer) -> None:
    # One sender, 200 ms per call, 100 requests/s: the sender falls further behind with
    # every call, and requests whose time is more than the 0.9 s deadline past are dropped.
    fake_server.servicer.delay = 0.2
    settings = LoadSettings(
        duration=0.3, rate=100.0, arrivals="constant", max_in_flight=1, timeout=0.9
    )
    summary, _, _ = _run(fake_server, settings)
    assert summary.requests == 30
    assert summary.ok >= 1  # the first call is always in time; a stalled machine sends fewer
    assert summary.errors == {NOT_SENT: 30 - summary.ok}
    assert len(fake_server.servicer.calls) == summary.ok


def test_open_loop_latency_counts_from_the_intended_time() -> None:
    # The server answers one call at a time in 50 ms while 100/s arrive: requests queue, and
    # the later ones must show the wait, not just their 50 ms of service.
    slow = start_fake_server(max_workers=1)
    slow.servicer.delay = 0.05
    try:
        settings = LoadSettings(duration=0.5, rate=100.0, arrivals="constant", timeout=10.0)
        summary, samples, _ = _run(slow, settings)
    finally:
        slow.server.stop(None)
    assert summary.ok == 50
    assert summary.max_ms > 500  # the last request waited for ~25 others: ~1.25 s
    assert samples.latency[-1] > samples.latency[0]


def test_sweep_finds_the_highest_rate_under_the_bound() -> None:
    async def model_server(settings: LoadSettings) -> Summary:
        # p99 grows linearly with the rate: 10 ms at 1,000 req/s.
        rate = settings.rate or 0.0
        samples = Samples()
        samples.add(0.0, rate / 100_000, OK)
        return summarise(samples, 1 / rate, offered_rps=rate)

    steps_seen: list[tuple[float, bool]] = []
    result = asyncio.run(
        sweep_rates(
            model_server,
            LoadSettings(duration=1.0, rate=1.0),
            SweepSettings(p99_ms=10.0, start_rate=100.0, refine_steps=4),
            lambda summary, ok: steps_seen.append((summary.offered_rps, ok)),
        )
    )
    # 100, 200, 400, 800 pass; 1600 fails; bisection 1200 no, 1000 yes, 1100 no, 1050 no.
    assert [rate for rate, _ in steps_seen] == [100, 200, 400, 800, 1600, 1200, 1000, 1100, 1050]
    assert result.best is not None and result.best.offered_rps == 1000


def test_loadtest_command_writes_table_json_and_png(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    json_path, png_path = tmp_path / "run.json", tmp_path / "run.png"
    result = CliRunner().invoke(
        main,
        [
            "loadtest", "--target", fake_server.target, "--rpc", "rank-ads", "--concurrency", "2",
            "--duration", "0.5", "--warmup", "0.1", "--users", "50", "--items", "40",
            "--json", str(json_path), "--plot", str(png_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "achieved rate" in result.output and "p99.9" in result.output
    payload = json.loads(json_path.read_text())
    for key in ("achieved_rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "errors"):
        assert key in payload
    assert payload["errors"] == {}
    assert payload["config"]["rpc"] == "rank-ads"
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    request = fake_server.servicer.calls[-1].request
    assert set(request.candidates.ad_ids) <= {f"i{n}" for n in range(40)}


@pytest.mark.parametrize(
    ("rpc", "method"),
    [("recommend", "Recommend"), ("similar", "SimilarItems"), ("audience", "Audience")],
)
def test_loadtest_drives_each_rpc(fake_server: FakeServer, rpc: str, method: str) -> None:
    result = CliRunner().invoke(
        main,
        ["loadtest", "--target", fake_server.target, "--rpc", rpc, "--rate", "100",
         "--duration", "0.3", "--warmup", "0", "--quiet", "--items", "30"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {call.method for call in fake_server.servicer.calls} == {method}


def test_loadtest_sweep_prints_the_curve(fake_server: FakeServer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "loadtest", "--target", fake_server.target, "--rpc", "health", "--sweep", "--rate", "50",
            "--max-rate", "200", "--p99-ms", "1000", "--duration", "0.3", "--warmup", "0", "--quiet",
            "--json", "-",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [step["offered_rps"] for step in payload["sweep"]] == [50, 100, 200]
    assert payload["best"]["offered_rps"] == 200
    assert "highest rate with p99 <= 1000.0 ms: 200 req/s" in result.stderr


def test_loadtest_refuses_two_modes() -> None:
    result = CliRunner().invoke(main, ["loadtest", "--concurrency", "2", "--rate", "10"])
    assert result.exit_code == 2
    assert "exactly one" in result.output


def test_loadtest_without_a_server_says_so(closed_port: int) -> None:
    result = CliRunner().invoke(
        main,
        ["loadtest", "--target", f"127.0.0.1:{closed_port}", "--timeout", "0.3",
         "--concurrency", "1", "--duration", "1"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no connection to" in result.output


def test_loadtest_score_sends_the_npy_inputs(fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "num.npy"
    np.save(path, np.ones((5, 3), np.float32))
    result = CliRunner().invoke(
        main,
        ["loadtest", "--target", fake_server.target, "--rpc", "score", "--model", "ctr",
         "--input", f"num={path}", "--concurrency", "1", "--duration", "0.2", "--warmup", "0",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request = fake_server.servicer.calls[-1].request
    assert request.model == "ctr"
    assert list(request.inputs["num"].shape) == [5, 3]


def test_loadtest_kserve_sends_raw_inputs(fake_server: FakeServer, tmp_path: Path) -> None:
    from reachrank.kserve.v2 import grpc_service_pb2

    np.save(tmp_path / "cat.npy", np.arange(6, dtype=np.int64).reshape(2, 3))
    np.save(tmp_path / "num.npy", np.ones((2, 4), np.float32))
    result = CliRunner().invoke(
        main,
        ["loadtest", "--target", fake_server.target, "--rpc", "kserve", "--model", "ctr",
         "--input", f"cat={tmp_path / 'cat.npy'}", "--input", f"num={tmp_path / 'num.npy'}",
         "--concurrency", "1", "--duration", "0.2", "--warmup", "0", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    call = fake_server.servicer.calls[-1]
    assert call.method == "ModelInfer"
    request = call.request
    assert isinstance(request, grpc_service_pb2.ModelInferRequest)
    assert request.model_name == "ctr"
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("cat", "INT64", [2, 3]), ("num", "FP32", [2, 4]),
    ]  # fmt: skip
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], "<i8"), np.arange(6))


def test_loadtest_score_needs_a_model() -> None:
    result = CliRunner().invoke(main, ["loadtest", "--rpc", "score", "--concurrency", "1"])
    assert result.exit_code == 2
    assert "--model" in result.output


def test_latency_histogram_quantiles_are_within_a_percent() -> None:
    from clients.latency import LatencyHistogram

    latencies = np.random.default_rng(0).lognormal(mean=-6.0, sigma=1.0, size=20_000)
    histogram = LatencyHistogram()
    for chunk in np.array_split(latencies, 7):  # fed in pieces, as live progress does
        histogram.add(chunk)
    assert histogram.total == 20_000
    for q in (0.5, 0.9, 0.99, 0.999):
        exact = np.quantile(latencies, q)
        assert exact <= histogram.quantile(q) <= exact * 1.0201
    assert math.isnan(LatencyHistogram().quantile(0.99))
