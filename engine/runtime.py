"""onnxruntime sessions on the right device, and the thread budget of the whole process.

onnxruntime-gpu lists CUDAExecutionProvider as available even on a machine with no GPU,
and a session asked for CUDA there logs errors and silently runs on CPU. So CUDA is asked
for only when a GPU is really visible, and what runs is read back from the session.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.model_settings import ModelSettings
from engine.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# The automatic thread choice: a graph that needs longer than this for PROBE_ROWS rows on one
# thread gets one thread per core (the demo FM: ~0.3 ms; DeepFM 400-400: ~4 ms).
PROBE_ROWS = 256
HEAVY_PROBE_S = 0.0015
_PROBE_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def gpu_visible() -> bool:
    """True when the CUDA driver loads and reports at least one device."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


def choose_providers(device: str, available: list[str], has_gpu: bool) -> list[str]:
    """Execution providers to request, best first."""
    if device == "cpu":
        return [CPU]
    wants_cuda = device == "cuda" or (device == "auto" and has_gpu)
    if wants_cuda and CUDA in available and has_gpu:
        return [CUDA, CPU]
    if device == "cuda":
        log.warning(
            "device=cuda requested but %s",
            "no GPU is visible" if not has_gpu else f"{CUDA} is not in this onnxruntime build",
        )
    return [CPU]


def _session(
    path: Path, inter_threads: int, intra_threads: int, providers: list[str]
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads halve batch-1 latency but burn the cores the gRPC threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=providers)


def probe_seconds(session: ort.InferenceSession, rows: int = PROBE_ROWS) -> float | None:
    """Best of a few timed runs on ``rows`` rows of zeros (None: the graph's inputs cannot be
    made up, e.g. non-numeric or with fixed batch sizes)."""
    feed = {}
    for node in session.get_inputs():
        dtype = _PROBE_DTYPES.get(node.type)
        dims = node.shape
        if dtype is None or not dims or isinstance(dims[0], int):
            return None
        rest = [d if isinstance(d, int) and d > 0 else 1 for d in dims[1:]]
        feed[node.name] = np.zeros([rows, *rest], dtype=dtype)
    try:
        session.run(None, feed)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            session.run(None, feed)
            best = min(best, time.perf_counter() - start)
    except Exception:  # zeros the graph refuses: keep the default
        return None
    return best


def create_session(
    path: Path,
    settings: Settings,
    model: ModelSettings | None = None,
    cpu_only: bool = False,
) -> tuple[ort.InferenceSession, str]:
    """An inference session and the provider it really runs on, with the model's own thread
    settings (default: the server's); ``cpu_only`` keeps it off a GPU (Triton's KIND_CPU).

    ``ort_intra_op_threads`` None (the default) sizes the thread pool per model: one thread,
    unless the graph is compute-heavy on the CPU (``PROBE_ROWS`` rows take longer than
    ``HEAVY_PROBE_S`` on one thread), then one per core. A small graph (an FM, LR) is dominated
    by per-operator overhead, which more threads only add to (each parallel section wakes
    the pool); a wide MLP (DeepFM's 400-400) splits its matrix products across cores."""
    model = model or ModelSettings.defaults(settings)
    device = "cpu" if cpu_only else settings.device
    providers = choose_providers(device, ort.get_available_providers(), gpu_visible())
    threads, inter = model.ort_intra_op_threads, model.ort_inter_op_threads
    session = _session(path, inter, 1 if threads is None else threads, providers)
    in_use = session.get_providers()[0]
    if threads is None and in_use == CPU:
        chosen = auto_intra_threads(session, path)
        if chosen > 1:
            session = _session(path, inter, chosen, providers)
    log.info("onnxruntime session %s runs on %s", path, in_use)
    return session, in_use


def auto_intra_threads(one_thread: ort.InferenceSession, path: Path | str = "") -> int:
    """The automatic intra-op thread count for a CPU session built with one thread."""
    cores = os.cpu_count() or 1
    if cores == 1:
        return 1
    took = probe_seconds(one_thread)
    chosen = cores if took is not None and took > HEAVY_PROBE_S else 1
    log.info(
        "onnxruntime session %s: %d intra-op thread(s) (%d zero rows on one thread: %s)",
        path,
        chosen,
        PROBE_ROWS,
        "not measurable" if took is None else f"{took * 1e3:.2f} ms",
    )
    return chosen


def apply_thread_budget(settings: Settings) -> None:
    """Size the kernels' thread pool (a process-wide budget every kernel call applies in the
    gRPC thread that makes it; Numba's own setting is per thread) and the BLAS pool, before any
    work starts, so onnxruntime, Numba and BLAS do not fight over the cores."""
    import numba
    from threadpoolctl import threadpool_limits

    import kernels

    kernels.set_threads(min(settings.numba_threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
