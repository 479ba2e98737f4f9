"""`python -m kernels`: compile (or load) every kernel into the Numba cache and report the time.

Run it at install or image-build time with the service's NUMBA_CACHE_DIR, so that the first
process start only loads machine code; the engine still calls `kernels.warmup()` at model load.
"""

import time

t0 = time.perf_counter()
import kernels  # noqa: E402 (the import itself is part of the time to ready)

imported = time.perf_counter() - t0
warm = kernels.warmup()
where = kernels.CACHE_DIR or "next to the sources (__pycache__); set NUMBA_CACHE_DIR"
print(f"kernels ready in {imported + warm:.2f} s (import {imported:.2f} s, warmup {warm:.2f} s)")
print(f"Numba cache: {where}")
