"""Request mixes for the load generator, serialised once up front.

Users are drawn from a Zipf distribution (a few heavy users, a long tail, as in real traffic);
ad candidates are sampled uniformly from the item ids. Ids come from files (one per line,
most active first) or are synthetic in the simulator's format, `u<N>` and `i<N>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from reachrank.kserve.v2 import grpc_service_pb2

from clients import convert
from clients.types import AdBid

METHODS: dict[str, str] = {
    "recommend": "/reachrank.v1.Ranking/Recommend",
    "rank-ads": "/reachrank.v1.Ranking/RankAds",
    "similar": "/reachrank.v1.Ranking/SimilarItems",
    "audience": "/reachrank.v1.Ranking/Audience",
    "score": "/reachrank.v1.Ranking/Score",
    # The same scoring over the KServe v2 / Triton protocol the server also speaks.
    "kserve": "/inference.GRPCInferenceService/ModelInfer",
    # The cheapest call a server has: measures the generator and transport, not the model.
    "health": "/grpc.health.v1.Health/Check",
}


@dataclass(frozen=True, slots=True)
class Workload:
    """What to send: one method and a pool of pre-serialised requests, used in turn."""

    method: str
    requests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.requests:
            raise ValueError("a workload needs at least one request")


@dataclass(frozen=True, slots=True)
class MixSettings:
    """Knobs of the recommend and rank-ads mixes."""

    k: int = 10
    ads_per_request: int = 20
    slots: int = 3
    min_bid: float = 0.1
    max_bid: float = 2.0
    zipf_exponent: float = 1.1
    pool_size: int = 4096
    seed: int = 0


def read_ids(path: Path) -> list[str]:
    """Ids from a text file, one per line (blank lines ignored)."""
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path} holds no ids")
    return ids


def synthetic_ids(prefix: str, count: int) -> list[str]:
    """`count` ids in the simulator's format: prefix followed by 0..count-1."""
    if count < 1:
        raise ValueError(f"need at least one {prefix!r} id, got {count}")
    return np.char.add(prefix, np.arange(count).astype(str)).tolist()


def zipf_draws(count: int, size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """`size` indices into `count` ids, index i drawn with probability ∝ 1 / (i + 1)**exponent."""
    weights = 1.0 / np.arange(1, count + 1, dtype=np.float64) ** exponent
    return rng.choice(count, size=size, p=weights / weights.sum())


def _zipf_workload(
    rpc: str, ids: Sequence[str], mix: MixSettings, build: Callable[[str], Message]
) -> Workload:
    draws = zipf_draws(len(ids), mix.pool_size, mix.zipf_exponent, np.random.default_rng(mix.seed))
    return Workload(METHODS[rpc], tuple(build(ids[i]).SerializeToString() for i in draws))


def recommend_workload(users: Sequence[str], mix: MixSettings) -> Workload:
    """Users drawn from the Zipf distribution ask for `mix.k` items."""
    return _zipf_workload(
        "recommend", users, mix, lambda user: convert.recommend_request(user, mix.k)
    )


def similar_workload(items: Sequence[str], mix: MixSettings) -> Workload:
    """Items drawn from the Zipf distribution (popular items are viewed most) ask for `mix.k`
    neighbours."""
    return _zipf_workload(
        "similar", items, mix, lambda item: convert.similar_items_request(item, mix.k)
    )


def audience_workload(items: Sequence[str], mix: MixSettings) -> Workload:
    """Offers of one item, drawn uniformly, ask for `mix.k` users."""
    rng = np.random.default_rng(mix.seed)
    draws = rng.integers(len(items), size=mix.pool_size)
    requests = tuple(convert.audience_request(items[i], mix.k).SerializeToString() for i in draws)
    return Workload(METHODS["audience"], requests)


def rank_ads_workload(users: Sequence[str], items: Sequence[str], mix: MixSettings) -> Workload:
    rng = np.random.default_rng(mix.seed)
    draws = zipf_draws(len(users), mix.pool_size, mix.zipf_exponent, rng)
    per_request = min(mix.ads_per_request, len(items))
    bids = rng.uniform(mix.min_bid, mix.max_bid, size=(mix.pool_size, per_request)).round(2)
    requests = []
    for row, user in enumerate(draws):
        candidates = rng.choice(len(items), size=per_request, replace=False)
        ads = [AdBid(items[i], float(bid)) for i, bid in zip(candidates, bids[row], strict=True)]
        request = convert.rank_ads_request(users[user], ads, slots=mix.slots)
        requests.append(request.SerializeToString())
    return Workload(METHODS["rank-ads"], tuple(requests))


def score_workload(model: str, inputs: Mapping[str, np.ndarray], version: int = 0) -> Workload:
    """Every request carries the same input arrays (the server's cost does not depend on values)."""
    return Workload(
        METHODS["score"], (convert.score_request(model, inputs, version).SerializeToString(),)
    )


# NumPy dtype name -> KServe v2 datatype.
KSERVE_DATATYPES = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64"}


def kserve_workload(model: str, inputs: Mapping[str, np.ndarray], version: int = 0) -> Workload:
    """One ModelInfer request carrying the arrays as raw little-endian input contents."""
    request = grpc_service_pb2.ModelInferRequest(
        model_name=model, model_version=str(version) if version else ""
    )
    for name, array in inputs.items():
        datatype = KSERVE_DATATYPES.get(array.dtype.name)
        if datatype is None:
            raise ValueError(f"input {name!r}: unsupported dtype {array.dtype.name}")
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(
            np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        )
    return Workload(METHODS["kserve"], (request.SerializeToString(),))


def health_workload() -> Workload:
    return Workload(METHODS["health"], (health_pb2.HealthCheckRequest().SerializeToString(),))
