"""ReachRank Numba kernels: retrieval, similarity, filters, hashing and gathers.

Training and serving both import this package, which imports nothing else of ReachRank's.

- `topk(queries, items, k, metric=, exclude=, allowed=)`: exact top-k by inner product or cosine,
  filters applied inside the scan; `exclusions_csr` builds the `exclude` pair.
- `hash_strings`, `hash_string` (one string, per request), `feature_buckets`: MurmurHash3_x86_32 feature hashing, frozen key format.
- `gather_rows`: table rows by id into a contiguous array (id -1 gives zeros).
- `warmup()`: compile/load every kernel at model load, never on a request.

Plain NumPy references of each kernel live in `kernels.reference`.
"""

from kernels.exact import topk
from kernels.filters import exclusions_csr
from kernels.gather import gather_rows
from kernels.hashing import MISSING, feature_buckets, hash_string, hash_strings
from kernels.warmup import warmup

__all__ = [
    "MISSING",
    "exclusions_csr",
    "feature_buckets",
    "gather_rows",
    "hash_string",
    "hash_strings",
    "topk",
    "warmup",
]
