"""Latency samples of a load run and their summary: rate, percentiles, errors by status code."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

OK = "OK"
# Not a gRPC status: the generator could not send the request within its deadline of its
# scheduled time because --max-in-flight calls were all waiting (the server had stalled);
# counted as an error so that it cannot hide.
NOT_SENT = "NOT_SENT"

PERCENTILES: dict[str, float] = {"p50_ms": 50, "p90_ms": 90, "p99_ms": 99, "p999_ms": 99.9}


@dataclass(slots=True)
class Samples:
    """One row per request: intended send time (s since start), latency (s), status name.

    Latency runs from the *intended* send time, so time a request spent waiting in the
    generator (open loop) counts against it instead of being hidden.
    """

    intended: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)

    def add(self, intended: float, latency: float, status: str) -> None:
        self.intended.append(intended)
        self.latency.append(latency)
        self.status.append(status)

    def __len__(self) -> int:
        return len(self.status)

    def window(self, start: float, end: float) -> Samples:
        """The requests meant to be sent in [start, end) (drops warm-up and drain)."""
        intended = np.asarray(self.intended)
        keep = np.flatnonzero((intended >= start) & (intended < end))
        return Samples(
            intended=intended[keep].tolist(),
            latency=np.asarray(self.latency)[keep].tolist(),
            status=[self.status[i] for i in keep],
        )

    def ok_latencies_ms(self) -> np.ndarray:
        latency = np.asarray(self.latency) * 1e3
        return latency[np.asarray(self.status) == OK] if len(self) else latency


class LatencyHistogram:
    """Running latency quantiles in O(new samples) per update: counts over log-spaced
    buckets from 1 µs to 1000 s, each 1% wide, so a quantile is within ~1% of the exact one.

    Live progress uses it instead of re-sorting every sample each second, which would stall
    the event loop (and so the measurement) more and more as a run goes on.
    """

    EDGES = np.geomspace(1e-6, 1e3, int(np.log(1e9) / np.log(1.01)) + 1)

    def __init__(self) -> None:
        self.counts = np.zeros(len(self.EDGES) + 1, dtype=np.int64)

    def add(self, seconds: np.ndarray) -> None:
        self.counts += np.bincount(np.searchsorted(self.EDGES, seconds), minlength=len(self.counts))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The upper edge (seconds) of the bucket holding quantile `q`; NaN when empty."""
        if not self.total:
            return float("nan")
        bucket = int(np.searchsorted(np.cumsum(self.counts), q * self.total))
        return float(self.EDGES[min(bucket, len(self.EDGES) - 1)])


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run achieved; latency percentiles are over successful requests only."""

    requests: int
    ok: int
    achieved_rps: float
    offered_rps: float | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]
    duration_s: float
    client_cpu_us_per_request: float | None = None
    """CPU the generator process (its gRPC threads included) spent per request: 1e6 over
    this is the rate one generator core can drive, whatever the server does."""

    @property
    def error_count(self) -> int:
        return self.requests - self.ok


def summarise(
    samples: Samples,
    duration: float,
    offered_rps: float | None = None,
    client_cpu_us_per_request: float | None = None,
) -> Summary:
    """Summary of `samples` (already cut to the measured window of `duration` seconds)."""
    latencies = samples.ok_latencies_ms()
    if latencies.size:
        points = np.percentile(latencies, list(PERCENTILES.values()))
        stats = dict(zip(PERCENTILES, map(float, points), strict=True))
        stats |= {"max_ms": float(latencies.max()), "mean_ms": float(latencies.mean())}
    else:
        stats = dict.fromkeys([*PERCENTILES, "max_ms", "mean_ms"], float("nan"))
    errors = Counter(status for status in samples.status if status != OK)
    return Summary(
        requests=len(samples),
        ok=int(latencies.size),
        achieved_rps=latencies.size / duration,
        offered_rps=offered_rps,
        errors=dict(sorted(errors.items())),
        duration_s=duration,
        client_cpu_us_per_request=client_cpu_us_per_request,
        **stats,
    )


def summary_rows(summary: Summary) -> list[tuple[str, str]]:
    """(metric, value) rows for the final table."""
    rows = [
        ("requests", f"{summary.requests:,}"),
        ("achieved rate", f"{summary.achieved_rps:,.1f}/s"),
    ]
    if summary.offered_rps is not None:
        rows.append(("offered rate", f"{summary.offered_rps:,.1f}/s"))
    rows += [
        (name.removesuffix("_ms").replace("p999", "p99.9"), f"{getattr(summary, name):.2f} ms")
        for name in [*PERCENTILES, "max_ms", "mean_ms"]
    ]
    if summary.client_cpu_us_per_request is not None:
        # Near 100% of a core, the generator rather than the server may be the limit.
        core_share = summary.client_cpu_us_per_request * summary.achieved_rps / 1e4
        rows.append(
            (
                "generator CPU",
                f"{summary.client_cpu_us_per_request:.1f} µs/request ({core_share:.0f}% of a core)",
            )
        )
    rows.append(("errors", f"{summary.error_count:,}"))
    rows += [(f"  {code}", f"{count:,}") for code, count in summary.errors.items()]
    return rows
