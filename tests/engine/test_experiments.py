"""Experiment assignment: sticky, split by weight, independent across salts, targeted by
segment; validation and the store; loading from a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mmh3
import numpy as np
import pytest
from reachrank.v1 import models_pb2

from engine.errors import NotFound
from engine.experiments import (
    ExperimentError,
    ExperimentStore,
    assign,
    buckets,
    load_experiments,
    split,
    validate,
)

USERS = [f"user-{i}" for i in range(100_000)]


def experiment(name: str = "exp", weights=(1.0, 1.0), **fields) -> models_pb2.Experiment:
    variants = [models_pb2.Variant(name=f"v{i}", weight=w) for i, w in enumerate(weights)]
    values = {"name": name, "rpcs": ["recommend"], "variants": variants, "enabled": True}
    return models_pb2.Experiment(**{**values, **fields})


def test_bucket_is_murmur3_of_salt_and_user() -> None:
    expected = [mmh3.hash(f"s:{u}", signed=False) / 2**32 for u in USERS[:50]]
    assert buckets("s", USERS[:50]).tolist() == expected


def test_assignment_is_sticky_and_matches_the_batch_split() -> None:
    exp = experiment(weights=(1, 1, 1))
    once = [assign(exp, u) for u in USERS[:300]]
    assert once == [assign(exp, u) for u in USERS[:300]]
    assert once == [exp.variants[i].name for i in split(exp, USERS[:300])]
    # Adding an unrelated experiment or copying the definition changes nothing.
    store = ExperimentStore([exp, experiment("other")])
    assert once == [assign(store.get("exp"), u) for u in USERS[:300]]


@pytest.mark.parametrize("weights", [(1, 1), (1, 2, 7), (0.05, 0.95), (3, 3, 3, 1)])
def test_split_follows_the_weights_within_binomial_tolerance(weights) -> None:
    counts = np.bincount(split(experiment(weights=weights), USERS), minlength=len(weights))
    n = len(USERS)
    for count, weight in zip(counts, weights, strict=True):
        p = weight / sum(weights)
        assert abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p)), (counts, weights)


def test_two_salts_split_users_independently() -> None:
    a = split(experiment("a"), USERS)
    b = split(experiment("b"), USERS)  # the salt defaults to the name
    table = np.histogram2d(a, b, bins=2)[0]
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 10.83  # chi-square, 1 degree of freedom, p = 0.001
    same_salt = split(experiment("c", salt="a"), USERS)
    assert (same_salt == a).all()


def test_segment_targeting_and_disabled_experiments() -> None:
    exp = experiment(segments=["champions", "cluster:3"])
    assert assign(exp, "u1", "champions") in {"v0", "v1"}
    assert assign(exp, "u1", ["new", "cluster:3"]) == assign(exp, "u1", "champions")
    assert assign(exp, "u1", "hibernating") is None
    assert assign(exp, "u1") is None
    assert assign(experiment(), "u1") is not None  # no targeting: everyone enters
    assert assign(experiment(enabled=False), "u1") is None


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (experiment(name=""), "name is required"),
        (experiment(weights=()), "at least one variant"),
        (experiment(weights=(1, 0)), r"variants\[1\].weight"),
        (experiment(weights=(1, -2)), r"variants\[1\].weight"),
        (experiment(weights=(1, float("nan"))), r"variants\[1\].weight"),
        (
            models_pb2.Experiment(
                name="e",
                rpcs=["recommend"],
                variants=[models_pb2.Variant(name="a", weight=1)] * 2,
            ),
            "repeated",
        ),
        (experiment(rpcs=[]), "rpcs"),
        (experiment(rpcs=["recommend", "score"]), r"rpcs\[1\]"),
    ],
)
def test_validation_names_the_bad_field(broken: models_pb2.Experiment, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        validate(broken)
    with pytest.raises(ExperimentError, match=message):
        ExperimentStore().set(broken)


def test_store_set_replace_list_delete_active() -> None:
    store = ExperimentStore()
    store.set(experiment("b", rpcs=["rank_ads"]))
    store.set(experiment("a"))
    store.set(experiment("c", enabled=False))
    assert [e.name for e in store.list()] == ["a", "b", "c"]
    assert [e.name for e in store.active("recommend")] == ["a"]
    assert [e.name for e in store.active("rank_ads")] == ["b"]
    store.set(experiment("a", weights=(1, 1, 1)))
    assert len(store.get("a").variants) == 3
    store.delete("a")
    with pytest.raises(NotFound):
        store.delete("a")
    with pytest.raises(NotFound):
        store.get("a")


def test_load_experiments_from_json(tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    entry = {
        "name": "ranker-v2",
        "salt": "2026-11",
        "rpcs": ["recommend", "rank_ads"],
        "variants": [
            {"name": "control", "weight": 90},
            {"name": "v2", "weight": 10, "ctrModel": "ctr", "ctrVersion": "2"},
        ],
        "enabled": True,
    }
    path.write_text(json.dumps({"experiments": [entry]}))
    (loaded,) = load_experiments(path)
    assert loaded.variants[1].ctr_version == 2 and loaded.salt == "2026-11"
    path.write_text(json.dumps({"experiments": [{**entry, "variants": []}]}))
    with pytest.raises(ExperimentError, match=r"experiments\[0\].*at least one variant"):
        load_experiments(path)
    path.write_text("[]")
    with pytest.raises(ExperimentError, match="expected"):
        load_experiments(path)


def test_assignments_of_a_user_across_active_experiments() -> None:
    store = ExperimentStore(
        [
            experiment("a", weights=(1,)),
            experiment("b", weights=(1, 1), segments=["champions"]),
            experiment("c", rpcs=["rank_ads"]),
            experiment("d", enabled=False),
        ]
    )
    assert [(e, v.name) for e, v in store.assignments("recommend", "u1")] == [("a", "v0")]
    both = store.assignments("recommend", "u1", "champions")
    assert [e for e, _ in both] == ["a", "b"]
    assert both[1][1].name == assign(store.get("b"), "u1", "champions")
    assert [e for e, _ in store.assignments("rank_ads", "u1")] == ["c"]
