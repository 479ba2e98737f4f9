"""onnxruntime sessions on the right device, and the thread budget of the whole process.

onnxruntime-gpu lists CUDAExecutionProvider as available even on a machine with no GPU,
and a session asked for CUDA there logs errors and silently runs on CPU. So CUDA is asked
for only when a GPU is really visible, and what runs is read back from the session.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import onnxruntime as ort

from engine.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


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


def create_session(path: Path, settings: Settings) -> tuple[ort.InferenceSession, str]:
    """An inference session and the provider it really runs on."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.ort_intra_op_threads
    options.inter_op_num_threads = settings.ort_inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads halve batch-1 latency but burn the cores the gRPC threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    providers = choose_providers(settings.device, ort.get_available_providers(), gpu_visible())
    session = ort.InferenceSession(str(path), options, providers=providers)
    in_use = session.get_providers()[0]
    log.info("onnxruntime session %s runs on %s", path, in_use)
    return session, in_use


def apply_thread_budget(settings: Settings) -> None:
    """Size the kernels' thread pool (a process-wide budget every kernel call applies in the
    gRPC thread that makes it; Numba's own setting is per thread) and the BLAS pool, before any
    work starts, so onnxruntime, Numba and BLAS do not fight over the cores."""
    import numba
    from threadpoolctl import threadpool_limits

    import kernels

    kernels.set_threads(min(settings.numba_threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
