"""engine.state.ad_spend / freq_caps: the embedded and Redis backings answer the same, pacing
state is decided once per interval (compare-and-set), a spend write retried after its reply was
lost counts once, cap reservations are atomic under
concurrent callers (never above the limit), and the pacing controller's steps on hand values."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.replica_bed import RedisServer, free_port
from engine.ads.pacing import next_pace
from engine.state.ad_spend import EmbeddedSpend, Pace, RedisSpend, SpendStore
from engine.state.freq_caps import CapStore, EmbeddedCaps, RedisCaps
from engine.state.redis_store import RedisState, StoreDown


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "redis"])
def stores(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> Iterator[tuple[SpendStore, CapStore]]:
    if request.param == "embedded":
        yield EmbeddedSpend(), EmbeddedCaps()
        return
    state = RedisState(f"redis://127.0.0.1:{redis_server.port}/{free_port() % 16}", cache_s=0.0)
    state.client.flushdb()
    yield RedisSpend(state), RedisCaps(state)
    state.close()


def test_spend_counts_billed_served_and_recent_minutes(stores: tuple[SpendStore, CapStore]) -> None:
    spend, _ = stores
    spend.add([("c|d", 10, 0.5, 0.0), ("c|d", 11, 0.25, 0.0), ("c|d", 11, 0.0, 2.0)])
    spend.add([("c|d", 12, 0.1, 0.1)])  # billed at serve (CPM): not waiting in a minute bucket
    (s,) = spend.read(["c|d"], range(11, 13))
    assert s.billed == pytest.approx(2.1)
    assert s.served == pytest.approx(0.85)
    assert s.recent == pytest.approx(0.25)
    (empty,) = spend.read(["other|d"], range(0, 3))
    assert (empty.billed, empty.served, empty.recent, empty.pace.interval) == (0, 0, 0, -1)


def test_pacing_state_is_replaced_only_by_a_newer_interval(
    stores: tuple[SpendStore, CapStore],
) -> None:
    spend, _ = stores
    assert spend.set_pace("c|d", Pace(3, 0.5, 1.0, 40.0))
    assert not spend.set_pace("c|d", Pace(3, 0.9, 1.0, 40.0))  # a second worker, same interval
    assert not spend.set_pace("c|d", Pace(2, 0.9, 1.0, 40.0))
    (s,) = spend.read(["c|d"], range(0))
    assert s.pace == Pace(3, 0.5, 1.0, 40.0)
    assert spend.set_pace("c|d", Pace(4, 0.25, 2.0, 41.0))
    assert spend.read(["c|d"], range(0))[0].pace.throttle == 0.25


def test_cap_reservations_are_all_or_nothing(stores: tuple[SpendStore, CapStore]) -> None:
    _, caps = stores
    both = (["ad:a:u:1", "adv:x:u:1"], [2, 3], [3600, 86400])
    assert caps.reserve([both, both], 0) == [True, True]
    assert caps.counts(["ad:a:u:1", "adv:x:u:1"]) == [2, 2]
    # The ad's cap is reached: the reservation fails and the advertiser's counter is untouched.
    assert caps.reserve([both], 0) == [False]
    assert caps.counts(["ad:a:u:1", "adv:x:u:1"]) == [2, 2]
    other = (["ad:b:u:1", "adv:x:u:1"], [5, 3], [3600, 86400])
    assert caps.reserve([other, other], 0) == [True, False]


def test_concurrent_reservations_never_pass_the_limit(stores: tuple[SpendStore, CapStore]) -> None:
    _, caps = stores
    start = threading.Barrier(8)
    plan = (["ad:hot:u:1"], [5], [60])

    def grab(_: int) -> int:
        start.wait()
        return sum(caps.reserve([plan], 0)[0] for _ in range(10))

    with ThreadPoolExecutor(8) as pool:
        granted = sum(pool.map(grab, range(8)))
    assert granted == 5
    assert caps.counts(["ad:hot:u:1"]) == [5]


def test_pacing_controller_steps() -> None:
    # Day's first interval: no rate known yet, unthrottled.
    first = next_pace(Pace(), 0, 0.0, 100.0, 0.0, 0.0, 0.1)
    assert first.throttle == 1.0 and first.rate == 0.0
    # It spent 40 in 10% of the traffic at throttle 1: rate 400 per day's traffic. The next
    # interval (another 10%) should end on the curve at 20: 20 - 40 < 0, so the floor.
    second = next_pace(first, 1, 40.0, 100.0, 0.0, 0.1, 0.2)
    assert second.rate == pytest.approx(400.0) and second.throttle == 0.01
    # Behind the curve: at 30% with 20 spent, the target by 40% is 40: 20 to spend out of an
    # unthrottled 0.1 x 400 = 40, so a throttle of 0.5.
    behind = next_pace(Pace(4, 0.5, 10.0, 400.0), 5, 20.0, 100.0, 0.2, 0.3, 0.4, smoothing=0.0)
    assert behind.throttle == pytest.approx(0.5)
    # The rate estimate scales the spend seen at throttle 0.5 to full delivery: 10 / (0.5 x 0.1).
    seen = next_pace(Pace(4, 0.5, 10.0, 400.0), 5, 20.0, 100.0, 0.2, 0.3, 0.4, smoothing=1.0)
    assert seen.rate == pytest.approx(200.0) and seen.throttle == pytest.approx(1.0)


def test_a_spend_write_retried_after_its_reply_was_lost_counts_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = RedisState(f"redis://127.0.0.1:{redis_server.port}/{free_port() % 16}", cache_s=0.0)
    state.client.flushdb()
    spend = RedisSpend(state)
    real, lost = state.guard.call, threading.Event()

    def reply_lost(fn, timeout_s=None):  # type: ignore[no-untyped-def]
        result = real(fn, timeout_s)  # Redis applies the write ...
        if not lost.is_set():  # ... but the first reply never comes back
            lost.set()
            raise StoreDown("store too slow")
        return result

    monkeypatch.setattr(state.guard, "call", reply_lost)
    try:
        spend.add([("c|d", 5, 0.5, 0.0), ("c|d", 5, 0.0, 2.0)])  # queued for a retry
        assert lost.is_set()
        spend.add([("c|d", 6, 0.25, 0.0)])  # retries the first batch with it, under its id
        (s,) = spend.read(["c|d"], range(5, 7))
        assert (s.billed, s.served, s.recent) == pytest.approx((2.0, 0.75, 0.75))
    finally:
        state.close()
