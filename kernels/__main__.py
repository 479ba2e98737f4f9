"""`python -m kernels`: compile (or load) every kernel into the Numba cache and report the time.

Run it at install or image-build time with the service's NUMBA_CACHE_DIR, so that the first
process start only loads machine code; the engine still calls `kernels.warmup()` at model load.
"""

import kernels

# `python -m` imports the package before this module runs, so only the warm-up is timed here.
warm = kernels.warmup()
where = kernels.CACHE_DIR or "next to the sources (__pycache__); set NUMBA_CACHE_DIR"
print(f"kernels ready: warmup took {warm:.2f} s")
print(f"Numba cache: {where}")
