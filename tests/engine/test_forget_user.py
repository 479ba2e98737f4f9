"""ForgetUser end to end: a repository trained by the real trainer on a log whose user ids are
distinctive, a real server with a feedback log (events in Parquet and in the WAL) and live
histories, the real client. After the admin's ForgetUser: no file under the repository or the
feedback directory holds the user's id or events (searched byte-wise and in decompressed
Parquet), the state store has nothing of theirs, serving treats them as a new user, a second
call erases nothing (idempotent), the audit log names who and how much but not the user, and
the next training run's bundles do not know them."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import polars as pl
import pytest
from click.testing import CliRunner

from bench.replica_bed import RedisServer
from clients import ClientOptions, ReachRankClient
from clients.cli import main
from clients.errors import ReachRankError
from engine.privacy.policy import policy_for
from engine.server import RunningServer, start_server
from engine.settings import Settings
from kernels.pseudonym import pseudonym, read_key
from tests.engine.privacy_helpers import known_user, traces
from training.models.ctr import CTRSize
from training.pipeline import Dataset, TrainConfig, train_all
from training.readers import read_events
from training.retrieval import RetrievalConfig

pytestmark = pytest.mark.slow  # trains its own repositories

ADMIN, USER_TOKEN = "admin-token-forget-test", "user-token-forget-test"
SMALL_TRAIN = TrainConfig(
    ctr_models=("lr",),
    ctr_size=CTRSize(dim=4, mlp=(8,), cross_layers=1),
    ctr_epochs=1,
    ctr_search=False,
    n_buckets=1 << 12,
    budget_minutes=None,
    retrieval=RetrievalConfig(models=("mf",), mf_dim=8, mf_epochs=2, progress=False),
    progress=False,
)
ADS = [{"ad_id": f"i{i}", "bid": 1.0 + i / 10} for i in range(6)]


def distinctive(user_id: pl.Expr) -> pl.Expr:
    """u17 -> subject-0017-7f3a: long enough that no model file holds it by chance."""
    return pl.format("subject-{}-7f3a", user_id.str.strip_prefix("u").str.zfill(4))


@pytest.fixture(scope="module")
def source(sim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny simulation with distinctive user ids, in the simulator's format."""
    out = tmp_path_factory.mktemp("forget-sim")
    for name in ("events", "users"):
        frame = pl.read_parquet(sim_dir / f"{name}.parquet")
        frame.with_columns(distinctive(pl.col("user_id"))).write_parquet(out / f"{name}.parquet")
    shutil.copy(sim_dir / "items.parquet", out / "items.parquet")
    return out


def train(
    source: Path, repo: Path, forgotten: Path | None = None, pseudonym_key: Path | None = None
) -> Path:
    read = read_events(source, "simulator", forgotten=forgotten, pseudonym_key=pseudonym_key)
    events, _ = read.collect()
    users = read.users.collect() if read.users is not None else None
    items = read.items.collect() if read.items is not None else None
    train_all(Dataset(events=events.lazy(), items=items, users=users), repo, SMALL_TRAIN)
    return repo


@pytest.fixture(scope="module")
def trained(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(source, tmp_path_factory.mktemp("forget-repo"))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("forget-redis"))
    server.start()
    yield server
    server.stop()


def redis_traces(url: str, needle: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    found = []
    for key in client.scan_iter("*"):
        if needle in key:
            found.append(f"key {key}")
        elif client.type(key) == "zset" and any(needle in m for m in client.zrange(key, 0, -1)):
            found.append(f"member of {key}")
    client.close()
    return found


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_forget_user_erases_everywhere_and_serves_them_as_new(
    store: str,
    trained: Path,
    source: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    repo = shutil.copytree(trained, tmp_path / "repo")
    feedback = tmp_path / "feedback"
    user, other = known_user(repo), "subject-9999-7f3a"
    state_url = "embedded"
    if store == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        state_url = redis_server.url
        import redis

        redis.Redis.from_url(state_url).flushall()
    running: RunningServer = start_server(
        Settings(
            repo=repo,
            port=0,
            feedback_dir=feedback,
            state_store=state_url,
            state_cache_ms=0,
            auth_tokens=USER_TOKEN,
            admin_tokens=ADMIN,
        )
    )
    target = f"127.0.0.1:{running.port}"
    stopped = False
    try:
        admin = ReachRankClient(target, ClientOptions(token=ADMIN, max_attempts=1))
        plain = ReachRankClient(target, ClientOptions(token=USER_TOKEN, max_attempts=1))
        stranger = plain.recommend("subject-never-seen", k=5)
        stranger_ads = plain.rank_ads("subject-never-seen", ADS, slots=2, all_ranked=True)
        assert plain.recommend(user, k=5).strategy == "personalised"
        assert plain.profile(user).known

        def log(n: int) -> None:
            events = [
                {"user_id": u, "item_id": f"i{j}", "event": e}
                for u in (user, other)
                for j in range(n)
                for e in ("impression", "click", "contact")
            ]
            assert plain.log_events(events) == len(events)

        log(3)
        assert running.extras is not None and running.extras.feedback is not None
        running.extras.feedback.flush()  # these are in Parquet now; the next ones in the WAL
        log(2)
        assert traces(user, [feedback]) and traces(user, [repo])

        with pytest.raises(ReachRankError) as refused:
            plain.forget_user(user)
        assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED

        erased = admin.forget_user(user)
        assert erased["feedback_parquet"] == 9 and erased["feedback_wal"] == 6, erased
        assert erased["state_histories"] == 10 and erased["state_contacts"] >= 5, erased
        assert erased["repository"] > 0, erased

        # Served as a new user at once: a stranger's answers, no profile.
        again = plain.recommend(user, k=5)
        assert again.strategy == "cold_start_popularity" and again.consent_mode == "personalised"
        assert again.item_ids == stranger.item_ids
        ads = plain.rank_ads(user, ADS, slots=2, all_ranked=True)
        assert [(a.ad_id, a.pctr) for a in ads.ads] == [(a.ad_id, a.pctr) for a in stranger_ads.ads]
        assert not plain.profile(user).known
        # Their new events are never logged with their id.
        assert plain.log_events([{"user_id": user, "item_id": "i1", "event": "click"}]) == 1

        # Idempotent, through the CLI: nothing left anywhere.
        cli = CliRunner().invoke(
            main,
            ["forget-user", "--user", user, "--target", target, "--token", ADMIN, "--json"],
        )
        assert cli.exit_code == 0, cli.output
        assert set(json.loads(cli.output).values()) == {0}
        if store == "redis":
            assert redis_traces(state_url, user) == []
            assert redis_traces(state_url, other)  # the search does find what is there
        running.stop(0)
        stopped = True
    finally:
        if not stopped:
            running.stop(0)

    roots = [repo, feedback]
    if store == "redis":
        roots.append(redis_server.directory)  # the append-only file, rewritten
    assert traces(user, roots) == []
    assert traces(other, [feedback])  # the search does find what is there

    audit = [json.loads(line) for line in (repo / "privacy-audit.jsonl").read_text().splitlines()]
    assert [a["already_forgotten"] for a in audit] == [False, True]
    assert all(a["who"].startswith("token:") and ADMIN not in a["who"] for a in audit)
    assert audit[0]["erased"]["feedback_parquet"] == 9

    # The next training run leaves them out of every bundle.
    retrained = train(source, tmp_path / "retrained", forgotten=repo / "forgotten.parquet")
    assert traces(user, [retrained]) == []
    assert traces(known_user(retrained), [retrained])  # others are still there


def test_pseudonymous_ids_at_rest(source: Path, tmp_path: Path) -> None:
    """Trained with --pseudonym-key and served with the same key: requests carry raw ids and
    are personalised, while no bundle, feedback file or state holds a raw id; ForgetUser takes
    the raw id too."""
    key = tmp_path / "pseudonym.key"
    key.write_text("a-secret-of-at-least-16-bytes\n")
    repo = train(source, tmp_path / "repo", pseudonym_key=key)
    feedback = tmp_path / "feedback"
    pseudonyms = set(pl.read_parquet(repo / "profiles" / "1" / "profiles.parquet")["user_id"])
    raw_users = set(pl.read_parquet(source / "users.parquet")["user_id"])
    user = "subject-0042-7f3a"
    assert user in raw_users and pseudonym(read_key(key), user) in pseudonyms
    assert traces(user, [repo]) == []
    running = start_server(
        Settings(repo=repo, port=0, feedback_dir=feedback, pseudonym_key_file=key)
    )
    try:
        with ReachRankClient(f"127.0.0.1:{running.port}", ClientOptions(max_attempts=1)) as c:
            assert c.recommend(user, k=5).strategy == "personalised"
            profile = c.profile(user)
            assert profile.known and profile.user_id == user
            assert c.log_events([{"user_id": user, "item_id": "i1", "event": "click"}]) == 1
            assert (
                c.log_events([{"user_id": "subject-0043-7f3a", "item_id": "i1", "event": "click"}])
                == 1
            )
            assert running.extras is not None and running.extras.feedback is not None
            running.extras.feedback.flush()
            assert traces(pseudonym(read_key(key), user), [feedback])  # logged, pseudonymous
            erased = c.forget_user(user)
            assert erased["feedback_parquet"] == 1 and erased["repository"] > 0, erased
            assert c.recommend(user, k=5).strategy == "cold_start_popularity"
    finally:
        running.stop(0)
    assert traces(user, [repo, feedback]) == []
    assert traces(pseudonym(read_key(key), user), [repo, feedback]) == []
    assert traces(pseudonym(read_key(key), "subject-0043-7f3a"), [feedback])


def test_an_event_logged_while_the_user_is_forgotten_is_erased_too(
    trained: Path, tmp_path: Path
) -> None:
    """A LogEvents call that resolved the user before the tombstone and writes after it:
    ForgetUser waits for it, so the event does not outlive the erasure."""
    repo = shutil.copytree(trained, tmp_path / "repo")
    feedback = tmp_path / "feedback"
    user = known_user(repo)
    running = start_server(Settings(repo=repo, port=0, feedback_dir=feedback))
    assert running.extras is not None and running.extras.feedback is not None
    log = running.extras.feedback
    entered, release, draining = threading.Event(), threading.Event(), threading.Event()
    real_append, policy = log.append, policy_for(running.settings)
    real_drain = policy.drain_writers

    def held_append(events: object) -> None:
        entered.set()
        assert release.wait(30)
        real_append(events)  # type: ignore[arg-type]

    def watched_drain(timeout_s: float = 30.0) -> bool:
        draining.set()
        return real_drain(timeout_s)

    try:
        with ReachRankClient(f"127.0.0.1:{running.port}", ClientOptions(max_attempts=1)) as c:
            log.append = held_append  # type: ignore[method-assign]
            policy.drain_writers = watched_drain  # type: ignore[method-assign]
            with ThreadPoolExecutor(2) as pool:
                logged = pool.submit(
                    c.log_events, [{"user_id": user, "item_id": "i1", "event": "click"}]
                )
                assert entered.wait(30)  # resolved (not yet forgotten), now writing
                log.append = real_append  # type: ignore[method-assign]
                forgot = pool.submit(c.forget_user, user)
                assert draining.wait(30)  # tombstone written; waiting for the writer
                release.set()
                assert logged.result(60) == 1
                assert forgot.result(60)["feedback_wal"] == 1
    finally:
        policy.drain_writers = real_drain  # type: ignore[method-assign]
        release.set()
        running.stop(0)
    assert traces(user, [feedback]) == []
