"""pCVR served beside pCTR: the CTR bundle's graph has a `pcvr` output (training.cvr), RankAds
answers it per ad (columns and messages), CPA bids rank by tCPA x pCTR x pCVR with it, Score
returns it, and a bundle without one still serves (pcvr absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from reachrank.v1 import ranking_pb2, ranking_pb2_grpc

from clients import ReachRankClient
from engine.models.ctr import CTRModel
from engine.server import RunningServer, start_server
from engine.settings import Settings

USER, CONTEXT = "u7", {"device": "mobile"}


def _serve(repo: Path) -> RunningServer:
    return start_server(Settings(repo=repo, host="127.0.0.1", port=0))


def _ads(repo: Path, n: int = 12) -> list[str]:
    import polars as pl

    items = pl.read_parquet(next((repo / "ctr").glob("*/items.parquet")))
    return items["item_id"].head(n).to_list()


def reference(
    server: RunningServer, repo: Path, ad_ids: list[str], output: str
) -> dict[str, float]:
    """onnxruntime on the served bundle's own graph, fed the request's features."""
    ctr = server.registry.get("ctr")
    assert isinstance(ctr, CTRModel)
    cat, num = ctr.features(USER, ctr.item_rows(ad_ids), CONTEXT)
    path = repo / "ctr" / str(ctr.id.version) / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([output], {"cat": cat, "num": num})
    return dict(zip(ad_ids, got.tolist(), strict=True))


def test_rank_ads_pcvr_is_the_graphs(
    client: ReachRankClient, server: RunningServer, trained_repo: Path
) -> None:
    ads = _ads(trained_repo)
    auction = client.rank_ads(
        USER, [{"ad_id": a, "bid": 1.0 + i} for i, a in enumerate(ads)], slots=3,
        context=CONTEXT, all_ranked=True,
    )  # fmt: skip
    assert len(auction.ads) == len(ads)
    want = reference(server, trained_repo, ads, "pcvr")
    pctr = reference(server, trained_repo, ads, "pctr")
    for ad in auction.ads:
        assert ad.pcvr is not None
        assert ad.pcvr == pytest.approx(want[ad.ad_id], rel=1e-6)
        assert ad.pctr == pytest.approx(pctr[ad.ad_id], rel=1e-6)
    # pCVR is a model output, not a constant: the ads differ.
    assert len({round(ad.pcvr, 6) for ad in auction.ads}) > 1


def test_rank_ads_messages_carry_pcvr(server: RunningServer, trained_repo: Path) -> None:
    """The older one-message-per-ad form sets `RankedAd.pcvr` on every ad."""
    ads = _ads(trained_repo, 5)
    request = ranking_pb2.RankAdsRequest(
        user_id=USER,
        context=CONTEXT,
        slots=2,
        ads=[ranking_pb2.Ad(ad_id=a, bid=1.0) for a in ads],
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response = ranking_pb2_grpc.RankingStub(channel).RankAds(request, timeout=30)
    want = reference(server, trained_repo, ads, "pcvr")
    assert [a.ad_id for a in response.ads]
    for ad in response.ads:
        assert ad.HasField("pcvr")
        assert ad.pcvr == pytest.approx(want[ad.ad_id], rel=1e-6)


def test_cpa_bids_rank_by_the_served_pcvr(server: RunningServer, trained_repo: Path) -> None:
    """A CPA ad's expected value per impression is tCPA x pCTR x pCVR with the server pCVR,
    and the answer reports that pCVR in the auction's order."""
    ads = _ads(trained_repo, 6)
    request = ranking_pb2.RankAdsRequest(user_id=USER, context=CONTEXT, slots=2, all_ranked=True)
    request.candidates.ad_ids.extend(ads)
    request.candidates.bids.extend([20.0] * len(ads))
    request.candidates.bid_types.extend(
        [ranking_pb2.BID_TYPE_CPA, ranking_pb2.BID_TYPE_CPC] * (len(ads) // 2)
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        response = ranking_pb2_grpc.RankingStub(channel).RankAds(request, timeout=30)
    r = response.ranked
    pcvr = reference(server, trained_repo, ads, "pcvr")
    pctr = reference(server, trained_repo, ads, "pctr")
    assert len(r.pcvr) == len(r.ad_ids) == len(ads)
    for ad_id, kind, ev, got in zip(r.ad_ids, r.bid_type, r.expected_value, r.pcvr, strict=True):
        assert got == pytest.approx(pcvr[ad_id], rel=1e-6)
        units = pctr[ad_id] * (pcvr[ad_id] if kind == ranking_pb2.BID_TYPE_CPA else 1.0)
        assert ev == pytest.approx(20.0 * units, rel=1e-5)


def test_score_returns_pcvr(client: ReachRankClient, server: RunningServer) -> None:
    ctr = server.registry.get("ctr")
    assert isinstance(ctr, CTRModel)
    cat, num = ctr.features(USER, ctr.item_rows(["i1", "i2", "i3"]), CONTEXT)
    result = client.score("ctr", {"cat": cat, "num": num})
    pctr, pcvr = ctr.score(cat, num)
    assert pcvr is not None
    np.testing.assert_allclose(result.outputs["pcvr"], pcvr, rtol=1e-6)
    np.testing.assert_allclose(result.outputs["pctr"], pctr, rtol=1e-6)


def _without_pcvr(src: Path, dst: Path) -> None:
    """A CTR bundle as trainers before the conversion model wrote it: the same graph with only
    its pctr output, a manifest without pcvr."""
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    keep = [o for o in model.graph.output if o.name == "pctr"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(onnx.utils.Extractor(model).extract_model(["cat", "num"], ["pctr"]),
              str(dst / "model.onnx"))  # fmt: skip
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["onnx"]["outputs"] = [o for o in manifest["onnx"]["outputs"] if o["name"] == "pctr"]
    manifest.pop("cvr", None)
    (dst / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_without_pcvr_still_serves(
    tmp_path: Path, trained_repo: Path, client: ReachRankClient, server: RunningServer
) -> None:
    """Same pCTR, no pCVR: the columns' pcvr is empty, the SDK says None, scoring returns
    None for it."""
    version = server.registry.get("ctr").id.version
    repo = tmp_path / "repo"
    _without_pcvr(trained_repo / "ctr" / str(version), repo / "ctr" / "1")
    ads = _ads(trained_repo)
    bids = [{"ad_id": a, "bid": 1.0 + i} for i, a in enumerate(ads)]
    with_pcvr = client.rank_ads(USER, bids, slots=3, context=CONTEXT, all_ranked=True)
    old = _serve(repo)
    try:
        ctr = old.registry.get("ctr")
        assert isinstance(ctr, CTRModel) and not ctr.has_pcvr
        with ReachRankClient(f"127.0.0.1:{old.port}") as c:
            c.wait_ready(timeout=60)
            auction = c.rank_ads(USER, bids, slots=3, context=CONTEXT, all_ranked=True)
        cat, num = ctr.features(USER, ctr.item_rows(ads), CONTEXT)
        assert ctr.score(cat, num)[1] is None
        assert ctr.predict_pcvr(cat, num) is None
    finally:
        old.stop(0)
    assert [a.ad_id for a in auction.ads] == [a.ad_id for a in with_pcvr.ads]
    assert all(a.pcvr is None for a in auction.ads)
    np.testing.assert_allclose(
        [a.pctr for a in auction.ads], [a.pctr for a in with_pcvr.ads], rtol=1e-6
    )
