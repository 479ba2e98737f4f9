"""The engine serves what the trainer builds from a real public log (MovieLens 100K ratings:
no impressions, so no CTR model): retrieval-ordered Recommend, SimilarItems, Audience,
Profile, and a clear answer for RankAds without a CTR model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients import ReachRankClient
from clients.errors import ReachRankError
from engine.server import RunningServer, start_server
from engine.settings import Settings
from training.pipeline import Dataset, TrainConfig, train_all
from training.readers import read_events
from training.retrieval import RetrievalConfig

pytestmark = pytest.mark.slow  # trains bundles on ML-100K first


@pytest.fixture(scope="module")
def movielens_server(
    tmp_path_factory: pytest.TempPathFactory, datasets: Path
) -> Iterator[RunningServer]:
    read = read_events(datasets / "ml-100k" / "u.data", "movielens")
    events, _ = read.collect()
    data = Dataset(
        events=events.lazy(),
        items=read.items.collect() if read.items is not None else None,
        users=read.users.collect() if read.users is not None else None,
    )
    repo = tmp_path_factory.mktemp("ml-repo")
    config = TrainConfig(
        split="per-user",
        progress=False,
        retrieval=RetrievalConfig(models=("mf",), mf_dim=16, mf_epochs=2, progress=False),
    )
    train_all(data, repo, config)
    running = start_server(Settings(repo=repo, port=0))
    yield running
    running.stop(0)


def test_movielens_bundles_serve_every_rpc(movielens_server: RunningServer) -> None:
    assert "ctr" not in movielens_server.registry.names()
    with ReachRankClient(f"127.0.0.1:{movielens_server.port}") as client:
        rec = client.recommend("1", k=10)
        assert rec.strategy == "personalised" and len(rec.items) == 10
        assert [m.name for m in rec.models] == ["retrieval"]
        scores = [i.score for i in rec.items]
        assert scores == sorted(scores, reverse=True)  # retrieval order without a CTR model
        similar = client.similar_items(rec.items[0].item_id, k=5)
        assert len(similar.items) == 5 and rec.items[0].item_id not in similar.item_ids
        audience = client.audience([rec.items[0].item_id], n=10)
        assert len(audience.users) == 10
        assert [u.score for u in audience.users] == sorted(
            (u.score for u in audience.users), reverse=True
        )
        profile = client.profile("1")
        assert profile.known and profile.rfm_segment
        assert client.recommend("not-a-user", k=3).strategy == "cold_start_popularity"
        with pytest.raises(ReachRankError) as err:
            client.rank_ads("1", [{"ad_id": "50", "bid": 1.0}])
        assert err.value.code == grpc.StatusCode.NOT_FOUND and "ctr" in err.value.message
