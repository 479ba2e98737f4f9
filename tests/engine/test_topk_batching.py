"""Cross-request batching of retrieval top-k: batched answers equal one-by-one answers, batches
really form under concurrency, errors and full queues reach each caller, and Recommend through
the real server answers the same with and without it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from clients import ReachRankClient
from engine.batching import request_alive, request_deadline
from engine.errors import Cancelled, DeadlineExceeded, ResourceExhausted
from engine.server import start_server
from engine.settings import Settings
from engine.topk_batching import TopKBatcher, TopKQuery
from kernels import exclusions_csr, topk

N_ITEMS, DIM = 500, 8


class Search:
    """Exact top-k over a fixed table that records each call's query count; can be held."""

    def __init__(self, items: np.ndarray) -> None:
        self.items = items
        self.sizes: list[int] = []
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()

    def __call__(self, queries, k, exclude, allowed):
        self.entered.set()
        assert self.open.wait(120)
        self.sizes.append(len(queries))
        return topk(queries, self.items, k, exclude=exclude, allowed=allowed)


@pytest.fixture
def items() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_ITEMS, DIM)).astype(np.float32)


@pytest.fixture
def search(items: np.ndarray) -> Search:
    return Search(items)


@pytest.fixture
def batcher(search: Search) -> Iterator[TopKBatcher]:
    b = TopKBatcher(
        search, max_batch_rows=64, max_queue_delay_us=0, max_queue_rows=20, name="t/1/topk"
    )
    yield b
    b.close()


def one_by_one(items: np.ndarray, q: TopKQuery) -> tuple[np.ndarray, np.ndarray]:
    ids, scores = topk(q.query, items, q.n, exclude=exclusions_csr([q.exclude]), allowed=q.allowed)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def held(search: Search, batcher: TopKBatcher, q: TopKQuery):
    """Submit ``q`` and hold its search inside the model: what follows queues behind it."""
    search.open.clear()
    future = batcher.submit(q)
    assert search.entered.wait(120)
    return future


def test_batched_answers_equal_one_by_one(
    items: np.ndarray, search: Search, batcher: TopKBatcher
) -> None:
    rng = np.random.default_rng(1)
    shared_mask = rng.random(N_ITEMS) < 0.5
    queries = [
        TopKQuery(
            rng.standard_normal(DIM).astype(np.float32),
            n=int(rng.integers(1, 40)),
            exclude=rng.choice(N_ITEMS, int(rng.integers(0, 30)), replace=False).astype(np.int64),
            allowed=(None, shared_mask, rng.random(N_ITEMS) < 0.02)[i % 3],
        )
        for i in range(15)
    ]
    first = held(search, batcher, queries[0])
    rest = [batcher.submit(q) for q in queries[1:]]
    search.open.set()
    for q, future in zip(queries, [first, *rest], strict=True):
        ids, scores = future.result(120)
        want_ids, want_scores = one_by_one(items, q)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5)  # blocked vs streaming sums
        assert len(ids) <= q.n and not np.isin(ids, q.exclude).any()
    # The 14 queued queries ran in one batch: one search for the unfiltered ones, one for the
    # shared mask, one per private mask.
    assert search.sizes[0] == 1 and sum(search.sizes[1:]) == 14
    assert max(search.sizes[1:]) == 5 and len(search.sizes) == 1 + 2 + 5


def test_search_errors_reach_every_caller_of_the_batch(
    search: Search, batcher: TopKBatcher
) -> None:
    q = TopKQuery(np.ones(DIM, np.float32), 5, np.zeros(0, np.int64))
    first = held(search, batcher, q)
    broken = TopKQuery(np.ones(DIM + 1, np.float32), 5, np.zeros(0, np.int64))  # wrong width
    waiting = [batcher.submit(broken), batcher.submit(q)]
    search.open.set()
    assert len(first.result(120)[0]) == 5
    with pytest.raises(ValueError, match="queries must be"):
        waiting[0].result(120)
    assert len(waiting[1].result(120)[0]) == 5  # same batch, answered


def test_full_queue_refuses(search: Search, batcher: TopKBatcher) -> None:
    q = TopKQuery(np.ones(DIM, np.float32), 5, np.zeros(0, np.int64))
    held(search, batcher, q)
    queued = [batcher.submit(q) for _ in range(20)]
    with pytest.raises(ResourceExhausted, match="queue full"):
        batcher.submit(q)
    search.open.set()
    assert all(len(f.result(120)[0]) == 5 for f in queued)


def test_recommend_answers_the_same_with_and_without_batching(trained_repo: Path) -> None:
    users = [f"u{i}" for i in range(40)]
    answers = {}
    for max_batch in (1, 64):
        running = start_server(
            Settings(repo=trained_repo, port=0, retrieval_max_batch=max_batch, grpc_threads=16)
        )
        try:
            batcher = running.registry.get("retrieval").topk_batcher
            assert (batcher is None) == (max_batch == 1)
            with (
                ReachRankClient(f"127.0.0.1:{running.port}") as client,
                ThreadPoolExecutor(16) as pool,
            ):
                answers[max_batch] = list(pool.map(lambda u: client.recommend(u, k=8), users * 3))
        finally:
            running.stop(0)
    for alone, batched in zip(answers[1], answers[64], strict=True):
        assert [i.item_id for i in alone.items] == [i.item_id for i in batched.items]
        np.testing.assert_allclose(
            [i.score for i in alone.items], [i.score for i in batched.items], rtol=1e-4
        )


def test_expired_and_cancelled_queries_never_reach_the_search(
    search: Search, batcher: TopKBatcher
) -> None:
    q = TopKQuery(np.ones(DIM, np.float32), 5, np.zeros(0, np.int64))
    first = held(search, batcher, q)
    soon = time.monotonic() + 0.01
    expired = batcher.submit(q, deadline=soon)
    token = request_deadline.set(soon)  # the servicer's way: the RPC's deadline
    try:
        expired_ctx = batcher.submit(q)
    finally:
        request_deadline.reset(token)
    caller_gone = threading.Event()
    token = request_alive.set(lambda: not caller_gone.is_set())  # the RPC context's is_active
    try:
        cancelled = batcher.submit(q)
    finally:
        request_alive.reset(token)
    alive = batcher.submit(q, deadline=time.monotonic() + 600)
    caller_gone.set()  # the client cancelled while its query waited in the queue
    while time.monotonic() <= soon:  # until both deadlines have passed, however slow the machine
        time.sleep(0.001)
    search.open.set()
    assert len(first.result(120)[0]) == 5
    for future in (expired, expired_ctx):
        with pytest.raises(DeadlineExceeded):
            future.result(120)
    with pytest.raises(Cancelled):
        cancelled.result(120)
    assert len(alive.result(120)[0]) == 5
    assert search.sizes == [1, 1]  # the held query, then only the live one
