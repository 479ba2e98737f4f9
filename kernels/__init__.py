"""ReachRank Numba kernels: retrieval, similarity, filters, hashing and gathers.

Training and serving both import this package, which imports nothing else of ReachRank's.

- `topk(queries, items, k, metric=, exclude=, allowed=)`: exact top-k by inner product or cosine,
  filters applied inside the scan; `exclusions_csr` builds the `exclude` pair.
- `build_ivf`, `quantize_ivf`, `ivf_topk`, `save_ivf`, `load_ivf`: IVF approximate retrieval.
- `mmr`, `cap_per_category`: diversity re-ranking of a shortlist.
- `hash_strings`, `hash_string` (one string, per request), `feature_buckets`:
  MurmurHash3_x86_32 feature hashing, frozen key format.
- `gather_rows`: table rows by id into a contiguous array (id -1 gives zeros).
- `warmup()`: compile/load every kernel at model load, never on a request.
- `set_threads(n)`: the kernels' thread budget (and BLAS pinned to one thread per kernel thread).

Plain NumPy references of each kernel live in `kernels.reference`. Compiled kernels are cached
under `$NUMBA_CACHE_DIR/kernels-<source digest>/` (see `kernels._cache`).
"""

# First: the cache folder must be chosen before any @njit(cache=True) kernel is defined.
from kernels._cache import CACHE_DIR
from kernels.diversity import cap_per_category, mmr
from kernels.exact import topk
from kernels.filters import exclusions_csr
from kernels.gather import gather_rows
from kernels.hashing import MISSING, feature_buckets, hash_string, hash_strings
from kernels.ivf import IVFIndex, build_ivf, ivf_topk, load_ivf, quantize_ivf, save_ivf
from kernels.threads import get_threads, set_threads
from kernels.warmup import warmup

__all__ = [
    "CACHE_DIR",
    "MISSING",
    "IVFIndex",
    "build_ivf",
    "cap_per_category",
    "exclusions_csr",
    "feature_buckets",
    "gather_rows",
    "get_threads",
    "hash_string",
    "hash_strings",
    "ivf_topk",
    "load_ivf",
    "mmr",
    "quantize_ivf",
    "save_ivf",
    "set_threads",
    "topk",
    "warmup",
]
