"""Find the highest open-loop rate whose p99 latency stays under a bound (perf_analyzer's
latency threshold): raise the rate geometrically until the bound breaks, then bisect."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clients.latency import Summary
from clients.loadtest import LoadSettings


@dataclass(frozen=True, slots=True)
class SweepSettings:
    p99_ms: float
    """Latency bound the rate must keep."""
    start_rate: float = 100.0
    growth: float = 2.0
    """Rate multiplier between steps until the bound breaks."""
    max_rate: float = 1_000_000.0
    refine_steps: int = 3
    """Bisection steps between the last good and the first bad rate."""
    max_error_ratio: float = 0.001
    """A step with more failed requests than this fraction fails, whatever its latency."""

    def __post_init__(self) -> None:
        if self.p99_ms <= 0 or self.start_rate <= 0 or self.growth <= 1:
            raise ValueError("sweep needs p99_ms > 0, start_rate > 0 and growth > 1")


@dataclass(frozen=True, slots=True)
class SweepResult:
    steps: tuple[Summary, ...]
    best: Summary | None  # the highest rate that met the bound, None if none did


def meets(summary: Summary, sweep: SweepSettings) -> bool:
    """Whether a step kept the bound. An open loop sends every scheduled request and times
    latency from its schedule, so a server that cannot keep up fails on latency or errors;
    no separate achieved-rate test is needed (and one would be noisy for Poisson arrivals)."""
    return summary.p99_ms <= sweep.p99_ms and summary.error_count <= sweep.max_error_ratio * max(
        summary.requests, 1
    )


async def sweep_rates(
    run_at: Callable[[LoadSettings], Awaitable[Summary]],
    base: LoadSettings,
    sweep: SweepSettings,
    on_step: Callable[[Summary, bool], None] | None = None,
) -> SweepResult:
    """Run `run_at` at increasing rates (each a full run of `base`'s duration)."""
    steps: list[Summary] = []
    good: Summary | None = None

    async def step(rate: float) -> bool:
        summary = await run_at(dataclasses.replace(base, rate=rate, concurrency=None))
        steps.append(summary)
        ok = meets(summary, sweep)
        if on_step:
            on_step(summary, ok)
        return ok

    rate, bad_rate = sweep.start_rate, None
    while rate <= sweep.max_rate:
        if not await step(rate):
            bad_rate = rate
            break
        good, rate = steps[-1], rate * sweep.growth
    if bad_rate is not None:
        low = good.offered_rps if good else 0.0
        high = bad_rate
        for _ in range(sweep.refine_steps):
            middle = (low + high) / 2
            if middle <= 0:
                break
            if await step(middle):
                good, low = steps[-1], middle
            else:
                high = middle
    return SweepResult(tuple(steps), good)
