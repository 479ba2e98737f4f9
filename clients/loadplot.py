"""PNG charts of a load run (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clients.latency import OK, Samples, Summary


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend; RuntimeError if not installed."""
    try:
        import matplotlib
    except ModuleNotFoundError as error:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _plain_numbers() -> Any:
    # "0.6, 2, 4" instead of matplotlib's "6x10^-1" on log axes.
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def plot_run(samples: Samples, summary: Summary, path: Path, title: str) -> None:
    """Latency over time (every request, with the p99 per second) and the latency distribution."""
    plt = pyplot()
    intended = np.asarray(samples.intended)
    latency_ms = np.asarray(samples.latency) * 1e3
    ok = np.asarray(samples.status) == OK
    fig, (over_time, distribution) = plt.subplots(1, 2, figsize=(13, 4.8))

    over_time.scatter(
        intended[ok], latency_ms[ok], s=2, alpha=0.3, label="request", rasterized=True
    )
    if (~ok).any():
        over_time.scatter(intended[~ok], latency_ms[~ok], s=6, c="red", label="error")
    if ok.any():
        second = intended[ok].astype(int)
        seconds = np.unique(second)
        p99 = [np.percentile(latency_ms[ok][second == s], 99) for s in seconds]
        over_time.plot(seconds + 0.5, p99, color="black", label="p99 per second")
    over_time.set(xlabel="intended send time (s)", ylabel="latency (ms)", yscale="log")
    over_time.yaxis.set_major_formatter(_plain_numbers())
    over_time.legend(loc="upper right")

    if ok.any():
        positive = np.maximum(latency_ms[ok], 1e-3)
        bins = np.geomspace(positive.min(), positive.max() * 1.01, 60)
        distribution.hist(positive, bins=bins)
        marks = [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
        for height, (name, label) in zip((0.95, 0.88, 0.81), marks, strict=True):
            value = getattr(summary, name)
            distribution.axvline(value, linestyle="--", color="black")
            # Staggered heights: p99 and p99.9 are often close enough to overlap.
            distribution.annotate(f" {label}", (value, height), xycoords=("data", "axes fraction"))
    distribution.set(xlabel="latency (ms)", ylabel="requests", xscale="log")
    distribution.xaxis.set_major_formatter(_plain_numbers())

    fig.suptitle(f"{title}: {summary.achieved_rps:,.0f} req/s, p99 {summary.p99_ms:.2f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(steps: tuple[Summary, ...], bound_ms: float, path: Path, title: str) -> None:
    """Latency percentiles against offered rate for a sweep."""
    plt = pyplot()
    ordered = sorted(steps, key=lambda s: s.offered_rps or 0.0)
    rates = [s.offered_rps for s in ordered]
    fig, axis = plt.subplots(figsize=(7, 4.8))
    for name, label in [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]:
        axis.plot(rates, [getattr(s, name) for s in ordered], marker="o", label=label)
    axis.axhline(bound_ms, color="red", linestyle="--", label=f"bound {bound_ms} ms")
    axis.set(xlabel="offered rate (req/s)", ylabel="latency (ms)", yscale="log", title=title)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
