"""The embedded feature store's user x item fields (the user's history in the item's category),
by hand, and the served features of a trained bundle against the trainer's own encoding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clients import ReachRankClient
from engine.errors import BundleError
from engine.feature_store import EmbeddedFeatureStore
from engine.models.ctr import CTRModel
from engine.repository import read_bundle
from engine.settings import Settings
from kernels.featurize import CategoricalField, FeatureSchema, NumericField
from training.pipeline import encode_frame

SCHEMA = FeatureSchema(
    categorical=(CategoricalField("user_id", "user"), CategoricalField("category", "item")),
    numeric=(
        NumericField("user_ctr", "user", default=0.1),
        NumericField("user_category_clicks", "user_item", default=0.0, by="category"),
        NumericField(
            "user_category_ctr", "user_item", mean=0.5, std=0.25, default=0.1, by="category"
        ),
    ),
    n_buckets=256,
)
ITEMS = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["x", "y", None]})
USERS = pl.DataFrame({"user_id": ["u1", "u2"], "user_ctr": [0.3, 0.4]})
USER_CATEGORY = pl.DataFrame(
    {
        "user_id": ["u2", "u1", "u1"],
        "category": ["y", "y", "x"],
        "user_category_clicks": [5.0, 1.0, 3.0],
        "user_category_ctr": [0.9, 0.2, 0.6],
    }
)


def _store() -> EmbeddedFeatureStore:
    return EmbeddedFeatureStore(SCHEMA, ITEMS, USERS, {"category": USER_CATEGORY})


def _encoded(clicks: float, ctr: float) -> list[float]:
    return [clicks, (ctr - 0.5) / 0.25]


def test_user_item_fields_follow_each_items_attribute() -> None:
    store = _store()
    rows = np.array([0, 1, 2, -1])  # x, y, no category, unknown item
    default = _encoded(0.0, 0.1)
    close = np.testing.assert_allclose
    close(
        store.user_item_features("u1", rows), [_encoded(3, 0.6), _encoded(1, 0.2), default, default]
    )
    close(store.user_item_features("u2", rows), [default, _encoded(5, 0.9), default, default])
    close(store.user_item_features("stranger", rows), [default] * 4)
    assert store.user_item_features("u1", np.zeros(0, dtype=np.int64)).shape == (0, 2)


def test_a_request_can_set_the_attribute_that_keys_the_history() -> None:
    store = _store()
    out = store.user_item_features(
        "u1", np.array([2, 0, -1]), {"category": ["x", None, "never-seen"]}
    )
    np.testing.assert_allclose(out, [_encoded(3, 0.6), _encoded(3, 0.6), _encoded(0, 0.1)])


def test_fields_without_their_table_are_refused() -> None:
    with pytest.raises(ValueError, match="category"):
        EmbeddedFeatureStore(SCHEMA, ITEMS, USERS)


def test_an_empty_table_serves_defaults() -> None:
    store = EmbeddedFeatureStore(SCHEMA, ITEMS, USERS, {"category": USER_CATEGORY.clear()})
    np.testing.assert_allclose(store.user_item_features("u1", np.array([0])), [_encoded(0, 0.1)])


def test_served_features_equal_the_trainers_encoding_of_the_shipped_tables(
    trained_repo: Path,
) -> None:
    ref = read_bundle(trained_repo, "ctr")
    assert ref.manifest.history is not None and ref.manifest.train["position_tower"]
    model = CTRModel(ref, Settings(repo=trained_repo))
    schema = model.schema
    assert {f.source for f in schema.numeric} >= {"user", "user_item"}
    items = pl.read_parquet(ref.file("items"))
    users = pl.read_parquet(ref.file("users"))
    by_category = pl.read_parquet(ref.file("user_item:category"))
    user = by_category["user_id"][0]
    # The trainer's view of (user, every catalogue item) from the shipped snapshot.
    frame = (
        items.with_columns(pl.lit(user).alias("user_id"), pl.lit("1").alias("position"))
        .join(users, on="user_id", how="left")
        .join(by_category, on=["user_id", "category"], how="left")
    )
    # Context the request does not carry: the field's default, as in training.
    frame = frame.with_columns(
        pl.lit(None, dtype=pl.String).alias(f.name)
        for f in schema.categorical
        if f.source == "context" and f.name not in frame.columns
    )
    cat, num = encode_frame(schema, frame)
    served_cat, served_num = model.features(user, model.item_rows(frame["item_id"].to_list()), {})
    np.testing.assert_array_equal(served_cat, cat)
    np.testing.assert_array_equal(served_num, num)
    # The user's history differs by category: the served rows are not all the defaults.
    ix = [f.name for f in schema.numeric].index("user_category_ctr")
    assert len(np.unique(served_num[:, ix])) > 1


def test_a_bundle_missing_its_history_table_fails_to_load(
    trained_repo: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "ctr" / "1"
    shutil.copytree(trained_repo / "ctr" / "1", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["artifacts"]["user_item:category"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="category"):
        CTRModel(read_bundle(tmp_path, "ctr"), Settings(repo=tmp_path))


def test_rank_ads_uses_the_users_history(client: ReachRankClient, trained_repo: Path) -> None:
    ref = read_bundle(trained_repo, "ctr")
    by_category = pl.read_parquet(ref.file("user_item:category"))
    items = pl.read_parquet(ref.file("items"))
    # The user with the most impressions, and their best and worst category by smoothed CTR.
    user = by_category.group_by("user_id").agg(pl.col("user_category_impressions").sum())
    user = user.sort("user_category_impressions", "user_id", descending=True)["user_id"][0]
    mine = by_category.filter(pl.col("user_id") == user).sort("user_category_ctr")
    worst, best = mine["category"][0], mine["category"][-1]
    ad = items["item_id"][0]
    pctr = {
        c: client.rank_ads(user, [{"ad_id": ad, "bid": 1.0, "features": {"category": c}}])
        .ads[0]
        .pctr
        for c in (worst, best)
    }
    stranger = client.rank_ads(
        "nobody-" + user, [{"ad_id": ad, "bid": 1.0, "features": {"category": best}}]
    )
    assert pctr[best] != pytest.approx(pctr[worst])
    assert stranger.ads[0].pctr != pytest.approx(pctr[best])
    # Score runs the same graph on the same features: the same pCTR.
    model = CTRModel(ref, Settings(repo=trained_repo))
    cat, num = model.features(user, model.item_rows([ad]), {}, [{"category": best}])
    scored = client.score("ctr", {"cat": cat, "num": num}).outputs["pctr"]
    assert scored[0] == pytest.approx(pctr[best], rel=1e-6)
