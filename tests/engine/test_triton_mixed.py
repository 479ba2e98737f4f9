"""ReachRank bundles and Triton-layout models side by side in one repository, and a bundle's
per-model settings in a serving.json beside its manifest (instead of the server's Settings)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg

from engine.errors import BundleError
from engine.models.ctr import CTRModel
from engine.models.retrieval import RetrievalModel
from engine.server import RunningServer, start_server
from engine.settings import Settings
from tests.engine.kserve_helpers import as_protocol, ctr_inputs, reference
from tests.engine.triton_models import build_repository


@pytest.fixture(scope="module")
def mixed_repo(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = build_repository(tmp_path_factory.mktemp("mixed") / "repo")
    shutil.copytree(trained_repo / "ctr", repo / "ctr")
    (repo / "ctr" / "serving.json").write_text(json.dumps({"max_batch_rows": 64}))
    # Two retrieval models from one bundle: one keeps the server's retrieval knobs, the other
    # sets its own top-k batch and queue.
    shutil.copytree(trained_repo / "retrieval", repo / "retrieval")
    shutil.copytree(trained_repo / "retrieval", repo / "retrieval-own")
    (repo / "retrieval-own" / "serving.json").write_text(
        json.dumps({"retrieval_max_batch": 8, "retrieval_max_queue": 100})
    )
    return repo


@pytest.fixture(scope="module")
def mixed(mixed_repo: Path) -> Iterator[RunningServer]:
    running = start_server(
        Settings(
            repo=mixed_repo,
            port=0,
            grace_period_s=0,
            max_batch_rows=4096,
            batch_workers=1,
            retrieval_max_batch=4,
        )
    )
    yield running
    running.stop(0)


def _version_dir(repo: Path) -> Path:
    return max((p for p in (repo / "ctr").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def test_both_kinds_serve_from_one_repository(mixed: RunningServer) -> None:
    with tg.InferenceServerClient(f"127.0.0.1:{mixed.port}") as client:
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index["ctr"] == index["simple"] == index["types_bytes"] == "READY"
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        tensors = [tg.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for t in tensors:
            t.set_data_from_numpy(a)
        assert client.infer("simple", tensors).as_numpy("OUTPUT0").tolist() == (2 * a).tolist()
        arrays = ctr_inputs(mixed.registry, rows=6)
        inputs = []
        for name, array in arrays.items():
            shaped = as_protocol(array)
            tensor = tg.InferInput(name, list(shaped.shape), "INT64" if name == "cat" else "FP32")
            tensor.set_data_from_numpy(shaped)
            inputs.append(tensor)
        got = client.infer("ctr", inputs).as_numpy("pctr")
        want = reference(mixed.registry, "ctr", arrays)["pctr"]
        np.testing.assert_allclose(got.reshape(-1), want.reshape(-1), rtol=1e-6)


def test_a_bundle_takes_its_own_serving_json(mixed: RunningServer, mixed_repo: Path) -> None:
    ctr = mixed.registry.get("ctr")
    assert isinstance(ctr, CTRModel) and ctr.batcher is not None
    assert ctr.batcher.max_batch_rows == 64  # the model's file, not the server's 4096
    assert ctr.model_settings.max_batch_rows == 64 and ctr.model_settings.batch_workers == 1
    beside = _version_dir(mixed_repo) / "serving.json"  # beside the manifest: wins
    beside.write_text(json.dumps({"batch_workers": 2}))
    try:
        reloaded = mixed.registry.load("ctr")
        assert reloaded.batcher.workers == 2 and reloaded.batcher.max_batch_rows == 64
        beside.write_text(json.dumps({"max_batch_rows": 0}))
        with pytest.raises(BundleError) as err:
            mixed.registry.load("ctr")
        assert f"{beside}: max_batch_rows:" in str(err.value)
        assert mixed.registry.get("ctr") is reloaded  # the refused load kept the serving one
    finally:
        beside.unlink()


def test_a_retrieval_bundle_takes_its_own_top_k_knobs(mixed: RunningServer) -> None:
    server_wide, own = mixed.registry.get("retrieval"), mixed.registry.get("retrieval-own")
    assert isinstance(server_wide, RetrievalModel) and isinstance(own, RetrievalModel)
    assert server_wide.topk_batcher is not None and own.topk_batcher is not None
    assert server_wide.topk_batcher.max_batch_rows == 4  # the server's setting
    assert server_wide.topk_batcher.max_queue_rows == Settings().retrieval_max_queue
    assert (own.topk_batcher.max_batch_rows, own.topk_batcher.max_queue_rows) == (8, 100)
