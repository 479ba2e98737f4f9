"""The lean request path's pieces on their own: tables derived once per model pair and owned
by the model, the user's segment looked up once per request, and the server interceptor's
per-method handlers built once."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from reachrank.v1 import models_pb2

from engine import pipelines
from engine.experiments import ExperimentStore
from engine.interceptor import ServingInterceptor
from engine.models.base import DerivedTables
from engine.models.profiles import UserSegment
from engine.registry import ModelRegistry
from engine.routing import route
from engine.settings import Settings


class _Model:
    """Stands for a loaded model object (hashable by identity, weakly referenceable)."""


def test_derived_tables_are_built_once_per_model_and_die_with_it() -> None:
    tables = DerivedTables()
    builds: list[int] = []
    first, second = _Model(), _Model()

    def build(value: int) -> Any:
        builds.append(value)
        return np.full(3, value)

    a = tables.get(first, "rows", lambda: build(1))
    assert tables.get(first, "rows", lambda: build(99)) is a  # cached: built once
    b = tables.get(second, "rows", lambda: build(2))  # another object: its own table
    assert builds == [1, 2] and int(b[0]) == 2
    del first
    gc.collect()
    assert len(tables._tables) == 1  # the entry went with its model; no id() can alias it


def test_a_reloaded_ctr_model_gets_its_own_alignment(trained_repo: Path) -> None:
    registry = ModelRegistry(Settings(repo=trained_repo, batching=False))
    retrieval, ctr = registry.load("retrieval"), registry.load("ctr")
    rows = pipelines.ctr_rows_of(retrieval, ctr)
    assert len(rows) == len(retrieval.item_ids)
    np.testing.assert_array_equal(rows, ctr.item_rows(retrieval.item_ids))
    assert pipelines.ctr_rows_of(retrieval, ctr) is rows
    reloaded = registry.load("ctr")  # a new object for the same bundle
    assert reloaded is not ctr
    assert pipelines.ctr_rows_of(retrieval, reloaded) is not rows


class _CountingProfiles:
    def __init__(self) -> None:
        self.lookups = 0

    def segment_of(self, user_id: str) -> tuple[str, int]:
        self.lookups += 1
        return "champions", 2


def test_the_users_segment_is_looked_up_once_per_request() -> None:
    profiles = _CountingProfiles()
    segment = UserSegment(profiles, "u1")  # type: ignore[arg-type]
    experiment = models_pb2.Experiment(
        name="seg",
        rpcs=["recommend"],
        segments=["cluster:2"],
        enabled=True,
        variants=[models_pb2.Variant(name="a", weight=100, ctr_model="ctr")],
    )
    store = ExperimentStore([experiment])
    chosen = route(store, Settings(), "recommend", "u1", segment)
    assert chosen.experiment == "seg"  # targeted by segment: it needed the lookup
    assert segment.value == ("champions", 2)  # the pipeline's cold-start fallback asks again
    assert profiles.lookups == 1
    assert UserSegment(None, "u1").value == ("", -1)


def test_the_interceptor_builds_each_methods_handler_once() -> None:
    def behavior(request: Any, context: Any) -> Any:
        return request

    handler = grpc.unary_unary_rpc_method_handler(behavior)
    interceptor = ServingInterceptor()
    details = type("Details", (), {"method": "/reachrank.v1.Ranking/Recommend"})()
    first = interceptor.intercept_service(lambda _d: handler, details)
    assert interceptor.intercept_service(lambda _d: handler, details) is first
    other = grpc.unary_unary_rpc_method_handler(behavior)  # the method's handler changed
    assert interceptor.intercept_service(lambda _d: other, details) is not first
    assert interceptor.intercept_service(lambda _d: None, details) is None
