"""Served values checked against references computed outside the request path: each score is
what onnxruntime gives for that (user, item) on the bundle's own graph, and cold-start users
get exactly the most popular items, overall or in their K-means segment, from the bundle's
files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from clients import ReachRankClient
from engine.models.ctr import CTRModel
from engine.server import RunningServer, start_server
from engine.settings import Settings

K = 10


@pytest.fixture(scope="module")
def served(trained_repo: Path) -> Iterator[RunningServer]:
    # As many candidates as items asked: the answer is the candidate set, reordered by pCTR.
    running = start_server(
        Settings(repo=trained_repo, host="127.0.0.1", port=0, retrieval_candidates=K)
    )
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def client(served: RunningServer) -> Iterator[ReachRankClient]:
    with ReachRankClient(f"127.0.0.1:{served.port}") as c:
        c.wait_ready(timeout=60)
        yield c


def reference_pctr(
    served: RunningServer, trained_repo: Path, user: str, items: list[str], context: dict
) -> np.ndarray:
    """onnxruntime on the bundle's graph, fed the features of ``user`` x ``items``."""
    ctr = served.registry.get("ctr")
    assert isinstance(ctr, CTRModel)
    cat, num = ctr.features(user, ctr.item_rows(items), context)
    path = trained_repo / "ctr" / str(ctr.id.version) / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["pctr"], {"cat": cat, "num": num})[0]


@pytest.mark.parametrize("user", ["u3", "u42", "someone-new"])
def test_recommend_scores_are_the_graphs_pctr(
    client: ReachRankClient, served: RunningServer, trained_repo: Path, user: str
) -> None:
    rec = client.recommend(user, k=K, context={"device": "web"})
    assert len(rec.items) == K
    want = reference_pctr(served, trained_repo, user, rec.item_ids, {"device": "web"})
    np.testing.assert_allclose([i.score for i in rec.items], want, rtol=1e-6)


def test_rank_ads_pctr_is_the_graphs(
    client: ReachRankClient, served: RunningServer, trained_repo: Path
) -> None:
    ads = [{"ad_id": f"i{j}", "bid": 1.0 + j % 3} for j in range(12)]
    auction = client.rank_ads("u5", ads, slots=3, all_ranked=True, context={"device": "app"})
    got = {a.ad_id: a.pctr for a in auction.ads}
    ids = sorted(got)
    want = reference_pctr(served, trained_repo, "u5", ids, {"device": "app"})
    np.testing.assert_allclose([got[i] for i in ids], want, rtol=1e-6)


def _top(values: dict[str, float], k: int) -> tuple[set[str], set[str]]:
    """(must, may): the items that have to be in a top-k by ``values`` and the items that
    may be (ties at the k-th value can go either way)."""
    kth = sorted(values.values(), reverse=True)[k - 1]
    return {i for i, v in values.items() if v > kth}, {i for i, v in values.items() if v >= kth}


def _check_top(rec, values: dict[str, float]) -> None:
    must, may = _top(values, K)
    got = set(rec.item_ids)
    assert len(got) == K and must <= got <= may, (sorted(got), sorted(must), sorted(may))
    for item in rec.items:  # the retrieval score is the popularity the pick was made on
        assert item.retrieval_score == pytest.approx(values[item.item_id], rel=1e-6, abs=1e-9)


def test_a_user_nobody_knows_gets_the_most_popular_items(
    client: ReachRankClient, trained_repo: Path
) -> None:
    bundle = trained_repo / "retrieval" / "1"
    items = pl.read_parquet(bundle / "items.parquet")["item_id"].to_list()
    popularity = np.load(bundle / "popularity.npy")
    rec = client.recommend("someone-new", k=K)
    assert rec.strategy == "cold_start_popularity"
    _check_top(rec, dict(zip(items, popularity.tolist(), strict=True)))


def test_a_profiled_user_without_embedding_gets_the_segments_favourites(
    client: ReachRankClient, trained_repo: Path
) -> None:
    bundle = trained_repo / "retrieval" / "1"
    known = pl.read_parquet(bundle / "users.parquet")
    items = pl.read_parquet(bundle / "items.parquet")["item_id"].to_list()
    profiles = pl.read_parquet(trained_repo / "profiles" / "1" / "profiles.parquet")
    cold = profiles.filter(~pl.col("user_id").is_in(known["user_id"].implode()))
    assert cold.height, "the tiny log has no profiled user without an embedding"
    indptr = np.load(bundle / "consumed_indptr.npy")
    indices = np.load(bundle / "consumed_indices.npy")
    row_of = dict(zip(known["user_id"], known["row"], strict=True))
    cluster_of = dict(zip(profiles["user_id"], profiles["cluster"], strict=True))
    checked = 0
    for user, cluster in cold.select("user_id", "cluster").iter_rows():
        # The segment's favourites: consumption counts among its users the model knows.
        rows = [row_of[u] for u, c in cluster_of.items() if c == cluster and u in row_of]
        counts = np.zeros(len(items))
        for r in rows:
            np.add.at(counts, indices[indptr[r] : indptr[r + 1]], 1)
        if np.count_nonzero(counts) < K:
            continue  # too small a segment to fill k from its favourites
        rec = client.recommend(user, k=K)
        assert rec.strategy == "cold_start_segment"
        assert [m.name for m in rec.models][:2] == ["retrieval", "profiles"]
        _check_top(rec, dict(zip(items, counts.tolist(), strict=True)))
        checked += 1
    assert checked >= 3
