"""`reachrank loadtest`: drive a server at a fixed concurrency or arrival rate and report latency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import click
import grpc.aio
import numpy as np

from clients.channel import base_metadata, open_aio_channel
from clients.cli_options import Connection, connection_options
from clients.latency import Samples, Summary, summary_rows
from clients.loadplot import plot_run, plot_sweep, pyplot
from clients.loadtest import Arrivals, LoadSettings, Progress, run_load
from clients.processes import run_in_processes, shares
from clients.sweep import SweepResult, SweepSettings, meets, sweep_rates
from clients.table import format_table
from clients.workload import (
    METHODS,
    MixSettings,
    Workload,
    audience_workload,
    health_workload,
    kserve_workload,
    rank_ads_workload,
    read_ids,
    recommend_workload,
    score_workload,
    similar_workload,
    synthetic_ids,
)


def _ids(path: Path | None, prefix: str, count: int) -> list[str]:
    return read_ids(path) if path else synthetic_ids(prefix, count)


def _workload(rpc: str, params: dict[str, Any]) -> Workload:
    mix = MixSettings(
        k=params["k"],
        ads_per_request=params["ads"],
        slots=params["slots"],
        zipf_exponent=params["zipf"],
        pool_size=params["pool"],
        seed=params["seed"],
    )

    def users() -> list[str]:
        return _ids(params["users_file"], "u", params["users"])

    def items() -> list[str]:
        return _ids(params["items_file"], "i", params["items"])

    if rpc == "recommend":
        return recommend_workload(users(), mix)
    if rpc == "rank-ads":
        return rank_ads_workload(users(), items(), mix)
    if rpc == "similar":
        return similar_workload(items(), mix)
    if rpc == "audience":
        return audience_workload(items(), mix)
    if rpc in ("score", "kserve"):
        if not params["model"] or not params["inputs"]:
            raise click.UsageError(
                f"--rpc {rpc} needs --model and at least one --input NAME=FILE.npy"
            )
        arrays = {}
        for spec in params["inputs"]:
            name, sep, path = spec.partition("=")
            if not sep:
                raise click.BadParameter(f"{spec!r} is not NAME=FILE.npy", param_hint="--input")
            arrays[name] = np.load(path, allow_pickle=False)
        build = score_workload if rpc == "score" else kserve_workload
        return build(params["model"], arrays)
    return health_workload()


def _print_progress(progress: Progress) -> None:
    click.echo(
        f"[{progress.elapsed:6.1f}s] {progress.rate:9,.0f} req/s  done {progress.completed:,}  "
        f"errors {progress.errors:,}  p99 {progress.p99_ms:7.2f} ms  in flight {progress.in_flight}",
        err=True,
    )


def _summary_json(summary: Summary) -> dict[str, Any]:
    fields = dataclasses.asdict(summary) | {"error_count": summary.error_count}
    # JSON has no NaN: percentiles of a run without one successful call become null.
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in fields.items()
    }


def _sweep_table(result: SweepResult, sweep: SweepSettings) -> str:
    rows = [
        (
            f"{s.offered_rps:,.0f}",
            f"{s.achieved_rps:,.0f}",
            f"{s.p50_ms:.2f}",
            f"{s.p99_ms:.2f}",
            s.error_count,
            "yes" if meets(s, sweep) else "no",
        )
        for s in sorted(result.steps, key=lambda s: s.offered_rps or 0.0)
    ]
    return format_table(["offered/s", "achieved/s", "p50 ms", "p99 ms", "errors", "meets"], rows)


@contextlib.asynccontextmanager
async def _connected(connection: Connection) -> AsyncIterator[grpc.aio.Channel]:
    channel = open_aio_channel(connection.target, connection.options)
    try:
        # Connect before the clock starts so the first requests do not pay for the handshake.
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=connection.options.timeout)
        except TimeoutError:
            raise click.ClickException(
                f"no connection to {connection.target} within {connection.options.timeout}s"
            ) from None
        yield channel
    finally:
        await channel.close()


async def _run_once(
    connection: Connection,
    workload: Workload,
    settings: LoadSettings,
    processes: int,
    quiet: bool,
) -> tuple[Summary, Samples]:
    progress = None if quiet else _print_progress
    if processes > 1:
        return await asyncio.to_thread(
            _in_processes, connection, workload, settings, processes, progress
        )
    async with _connected(connection) as channel:
        metadata = base_metadata(connection.options)
        return await run_load(channel, workload, settings, metadata, progress)


def _in_processes(
    connection: Connection,
    workload: Workload,
    settings: LoadSettings,
    processes: int,
    progress: Callable[[Progress], None] | None,
) -> tuple[Summary, Samples]:
    try:
        return run_in_processes(
            connection.target, connection.options, workload, settings, processes, progress
        )
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None


async def _run_sweep(
    connection: Connection,
    workload: Workload,
    settings: LoadSettings,
    sweep: SweepSettings,
    processes: int,
    quiet: bool,
) -> SweepResult:
    async def run_at(step: LoadSettings) -> Summary:
        click.echo(f"sweep: {step.rate:,.0f} req/s for {step.duration:g}s", err=True)
        summary, _ = await _run_once(connection, workload, step, processes, quiet)
        return summary

    return await sweep_rates(run_at, settings, sweep)


def _report_run(
    summary: Summary, samples: Samples, plot_path: Path | None, title: str, to_stderr: bool
) -> dict[str, Any]:
    click.echo(format_table(["metric", "value"], summary_rows(summary)), err=to_stderr)
    if plot_path:
        plot_run(samples, summary, plot_path, title)
    return _summary_json(summary)


def _report_sweep(
    result: SweepResult,
    sweep: SweepSettings,
    plot_path: Path | None,
    title: str,
    to_stderr: bool,
) -> dict[str, Any]:
    best = result.best
    click.echo(_sweep_table(result, sweep), err=to_stderr)
    click.echo(
        f"highest rate with p99 <= {sweep.p99_ms} ms: {best.offered_rps:,.0f} req/s"
        if best
        else f"no rate met p99 <= {sweep.p99_ms} ms",
        err=to_stderr,
    )
    if plot_path:
        plot_sweep(result.steps, sweep.p99_ms, plot_path, title)
    return {
        "p99_bound_ms": sweep.p99_ms,
        "best": _summary_json(best) if best else None,
        "sweep": [_summary_json(step) for step in result.steps],
    }


def _event_loop_runner(loop: str) -> Any:
    if loop == "uvloop":
        try:
            import uvloop
        except ModuleNotFoundError:
            raise click.ClickException("--loop uvloop needs uvloop: pip install uvloop") from None
        return uvloop.run
    return asyncio.run


@click.command()
@click.option("--rpc", type=click.Choice(list(METHODS)), default="recommend", show_default=True)
@click.option("--concurrency", type=int, help="Closed loop: calls kept in flight.")
@click.option("--rate", type=float, help="Open loop: requests per second.")
@click.option(
    "--arrivals", type=click.Choice(["poisson", "constant"]), default="poisson", show_default=True
)
@click.option("--duration", type=float, default=10.0, show_default=True, help="Measured seconds.")
@click.option(
    "--warmup", type=float, default=2.0, show_default=True, help="Unmeasured seconds first."
)
@click.option(
    "--max-in-flight",
    type=int,
    default=10_000,
    show_default=True,
    help="Open loop: most calls in flight.",
)
@click.option(
    "--users", type=int, default=2_000, show_default=True, help="Synthetic users u0..uN-1."
)
@click.option("--users-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--items", type=int, default=400, show_default=True, help="Synthetic items i0..iN-1.")
@click.option("--items-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--zipf", type=float, default=1.1, show_default=True, help="Zipf exponent of user draws."
)
@click.option(
    "-k",
    "k",
    type=int,
    default=10,
    show_default=True,
    help="Items (recommend, similar) or users (audience) per request.",
)
@click.option(
    "--ads", type=int, default=20, show_default=True, help="rank-ads: candidates per request."
)
@click.option("--slots", type=int, default=3, show_default=True, help="rank-ads: slots.")
@click.option("--model", help="score, kserve: model name.")
@click.option("--input", "inputs", multiple=True, help="score, kserve: NAME=FILE.npy (repeat).")
@click.option("--pool", type=int, default=4096, show_default=True, help="Distinct requests cycled.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sweep", is_flag=True, help="Find the highest rate whose p99 stays under --p99-ms.")
@click.option("--p99-ms", type=float, default=50.0, show_default=True, help="Sweep latency bound.")
@click.option(
    "--max-rate", type=float, default=1_000_000.0, show_default=True, help="Sweep ceiling."
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Generator processes sharing the load (when one core cannot drive enough).",
)
@click.option(
    "--loop", type=click.Choice(["asyncio", "uvloop"]), default="asyncio", show_default=True
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write JSON ('-': stdout).",
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG."
)
@click.option("--quiet", is_flag=True, help="No live progress.")
@connection_options
def loadtest(
    rpc: str,
    concurrency: int | None,
    rate: float | None,
    arrivals: str,
    duration: float,
    warmup: float,
    max_in_flight: int,
    sweep: bool,
    p99_ms: float,
    max_rate: float,
    processes: int,
    loop: str,
    json_path: Path | None,
    plot_path: Path | None,
    quiet: bool,
    connection: Connection,
    **mix: Any,
) -> None:
    """Load-test a server: closed loop (--concurrency) or open loop (--rate), or --sweep rates."""
    if sweep and concurrency is not None:
        raise click.UsageError("--sweep varies the open-loop rate: drop --concurrency")
    if sweep and rate is None:
        rate = 100.0
    try:
        settings = LoadSettings(
            duration=duration,
            concurrency=concurrency,
            rate=rate,
            arrivals=cast(Arrivals, arrivals),  # click.Choice has checked the value
            warmup=warmup,
            timeout=connection.options.timeout,
            max_in_flight=max_in_flight,
        )
        sweep_settings = (
            SweepSettings(p99_ms=p99_ms, start_rate=rate or 100.0, max_rate=max_rate)
            if sweep
            else None
        )
        workload = _workload(rpc, mix)
        shares(settings, processes)  # refuses a concurrency that cannot be split
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if plot_path:
        try:
            pyplot()  # fail before the run, not after it
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None
    # With --json -, stdout is for the JSON alone and the tables go to stderr.
    to_stderr = json_path is not None and str(json_path) == "-"
    run = _event_loop_runner(loop)
    title = f"{rpc} @ {connection.target}"
    if sweep_settings is None:
        summary, samples = run(_run_once(connection, workload, settings, processes, quiet))
        payload = _report_run(summary, samples, plot_path, title, to_stderr)
    else:
        result = run(_run_sweep(connection, workload, settings, sweep_settings, processes, quiet))
        payload = _report_sweep(result, sweep_settings, plot_path, title, to_stderr)
    payload["config"] = {
        "target": connection.target,
        "rpc": rpc,
        "concurrency": concurrency,
        "rate": rate,
        "arrivals": arrivals if rate else None,
        "duration_s": duration,
        "warmup_s": warmup,
        "timeout_s": connection.options.timeout,
        "loop": loop,
        "processes": processes,
    }
    if json_path:
        text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
        if to_stderr:
            sys.stdout.write(text)
        else:
            json_path.write_text(text)
