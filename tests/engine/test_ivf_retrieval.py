"""Approximate retrieval with the IVF index a retrieval bundle carries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import BundleError
from engine.models.retrieval import RetrievalModel
from engine.repository import read_bundle
from engine.settings import Settings
from training.ivf_bundle import ivf_lists_for, write_ivf


@pytest.fixture
def ivf_repo(tmp_path: Path, trained_repo: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo / "retrieval", repo / "retrieval")
    bundle = repo / "retrieval" / "1"
    manifest = json.loads((bundle / "manifest.json").read_text())
    items = np.load(bundle / "item_embeddings.npy")
    entries = write_ivf(bundle, items, n_lists=6, seed=0)
    manifest["ivf"] = entries["ivf"]
    manifest["artifacts"].update(entries["artifacts"])
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return repo


def test_ivf_with_every_list_probed_equals_exact(ivf_repo: Path) -> None:
    ref = read_bundle(ivf_repo, "retrieval")
    approx = RetrievalModel(ref, Settings(repo=ivf_repo, retrieval_search="ivf", ivf_nprobe=6))
    exact = RetrievalModel(ref, Settings(repo=ivf_repo, retrieval_search="exact"))
    assert approx.ivf is not None and exact.ivf is None
    none = np.zeros(0, dtype=np.int64)
    for user in range(0, len(exact.user_ids), 25):
        consumed = exact.consumed(user)
        a_ids, a_scores = approx.retrieve(user, 10, consumed, None)
        e_ids, e_scores = exact.retrieve(user, 10, consumed, None)
        np.testing.assert_array_equal(a_ids, e_ids)
        np.testing.assert_allclose(a_scores, e_scores, rtol=1e-5)
    # Fewer lists probed: still valid, distinct items honouring exclusions and filters.
    fewer = RetrievalModel(ref, Settings(repo=ivf_repo, retrieval_search="ivf", ivf_nprobe=1))
    mask = fewer.allowed_mask(["book"], None, None)
    ids, _ = fewer.retrieve(0, 5, none, mask)
    assert len(set(ids.tolist())) == len(ids) and all(fewer.item_category[i] == "book" for i in ids)


def test_ivf_required_but_missing_is_refused(trained_repo: Path) -> None:
    ref = read_bundle(trained_repo, "retrieval")
    with pytest.raises(BundleError, match="no IVF index"):
        RetrievalModel(ref, Settings(repo=trained_repo, retrieval_search="ivf"))


def test_ivf_lists_rule() -> None:
    assert ivf_lists_for(1_000, 50_000, None) == 0
    assert ivf_lists_for(1_000_000, 50_000, None) == 4000
    assert ivf_lists_for(1_000, 50_000, 16) == 16
