"""`reachrank serve --workers N`: N server processes on one port (SO_REUSEPORT).

Python serves RPCs on one core per process (the GIL), so a machine's cores are used by
processes, each with its own models, batchers and thread pools; the kernel spreads incoming
connections across them. Each worker gets its own metrics port (``metrics_port + i``) and its
own feedback log directory (``feedback_dir/worker-<i>``): the log has one writer.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from typing import Any

from engine.settings import Settings

log = logging.getLogger(__name__)


def worker_settings(settings: Settings, index: int, port: int) -> Settings:
    """The settings of worker ``index`` of ``settings.workers``."""
    update: dict[str, Any] = {"port": port, "so_reuseport": True, "workers": 1}
    if settings.ort_intra_op_threads is None:
        # The automatic choice gives a heavy model one thread per core in each process:
        # split the cores between the workers instead.
        update["ort_intra_op_threads"] = max(1, (os.cpu_count() or 1) // settings.workers)
    if settings.metrics_port:
        update["metrics_port"] = settings.metrics_port + index
    if settings.feedback_dir is not None:
        update["feedback_dir"] = settings.feedback_dir / f"worker-{index}"
    return settings.model_copy(update=update)


def _run_worker(settings: Settings, log_level: str) -> None:
    from engine.observability import configure_logging
    from engine.server import serve_forever

    configure_logging(log_level, json_format=settings.log_json)
    serve_forever(settings)


def pick_port(host: str, port: int) -> int:
    """The port to share: the configured one, or a free one when 0."""
    if port:
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_workers(settings: Settings, log_level: str = "INFO") -> None:
    """Start the workers, forward SIGTERM/SIGINT to them, wait for all to exit."""
    port = pick_port(settings.host, settings.port)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_run_worker,
            args=(worker_settings(settings, i, port), log_level),
            name=f"worker-{i}",
        )
        for i in range(settings.workers)
    ]
    for w in workers:
        w.start()
    log.info("%d workers serving on %s:%d", len(workers), settings.host, port)

    def forward(signum: int, _frame: object) -> None:
        for w in workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for w in workers:
        w.join()
    codes = [w.exitcode for w in workers]
    if any(codes):
        raise SystemExit(f"workers exited with {codes}")
