"""The erasure's file-level pieces without a server: WAL segments and Parquet files rewritten
without the user (a torn tail dropped, other records kept byte for byte), the tombstone set
persisted and adopted by another process's view, the trainer's anti-join over any id type."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from reachrank.v1 import feedback_pb2

from engine.feedback.erase import mask_folder, rewrite_parquet, rewrite_segment
from engine.feedback.parquet import write_events_parquet
from engine.feedback.records import frame_all, scan
from engine.privacy.tombstones import Tombstones, ensure_secret, write_digests
from kernels.forgotten import key_path, keyed_digest, legacy_digest
from kernels.pseudonym import pseudonym
from training.forgotten import exclude_forgotten


def payloads(users: list[str]) -> list[bytes]:
    return [
        feedback_pb2.FeedbackEvent(
            user_id=u, item_id=f"i{i}", event="click", ts_unix_ms=1_700_000_000_000 + i
        ).SerializeToString()
        for i, u in enumerate(users)
    ]


def test_a_segment_loses_only_the_users_records(tmp_path: Path) -> None:
    records = payloads(["keep-1", "gone-user", "keep-2", "gone-user"])
    path = tmp_path / "wal-000000000001.log"
    path.write_bytes(frame_all(records) + b"\x05\x00\x00")  # a torn tail
    assert rewrite_segment(path, {"gone-user"}) == (True, 2)
    left = scan(path.read_bytes())
    assert left.clean and left.payloads == [records[0], records[2]]
    assert rewrite_segment(path, {"gone-user"}) == (False, 0)  # nothing left: untouched


def test_a_parquet_file_loses_only_the_users_rows(tmp_path: Path) -> None:
    path = tmp_path / "events-000000000001.parquet"
    write_events_parquet(payloads(["a", "gone-user", "b", "gone-user", "c"]), path)
    assert rewrite_parquet(path, {"gone-user"}) == 2
    assert pl.read_parquet(path)["user_id"].to_list() == ["a", "b", "c"]
    assert rewrite_parquet(path, {"gone-user"}) == 0


def test_unparseable_bytes_are_masked(tmp_path: Path) -> None:
    (tmp_path / "tail").write_bytes(b"\x00gone-user\x07gone-user")
    assert mask_folder(tmp_path, {"gone-user"}) == 2
    assert b"gone-user" not in (tmp_path / "tail").read_bytes()
    assert mask_folder(tmp_path / "missing", {"gone-user"}) == 0


def test_tombstones_persist_and_other_views_adopt_them(tmp_path: Path) -> None:
    path = tmp_path / "forgotten.parquet"
    here, there = Tombstones(path, refresh_s=0.0), Tombstones(path, refresh_s=0.0)
    assert not here.contains("gone-user") and here.mask(["a"]) == [False]
    assert here.add("gone-user") and not here.add("gone-user")  # idempotent
    assert there.contains("gone-user") and not there.contains("other")
    assert there.mask(["other", "gone-user"]) == [False, True]
    assert b"gone-user" not in path.read_bytes()  # digests only
    assert Tombstones(path).contains("gone-user")  # a fresh process reads it


def test_tombstones_are_keyed_by_a_private_secret_made_once(tmp_path: Path) -> None:
    path = tmp_path / "forgotten.parquet"
    tombstones = Tombstones(path, refresh_s=0.0)
    tombstones.add("gone-user")
    secret = key_path(path)
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
    assert ensure_secret(path) == secret.read_bytes()  # made once, then reused
    entries = pl.read_parquet(path)["user_digest"].to_list()
    # A dictionary attack without the secret finds nothing: no unkeyed digest of the id.
    assert legacy_digest("gone-user") not in entries and len(entries) == 1
    assert entries == [keyed_digest(secret.read_bytes(), "gone-user")]
    other = tmp_path / "other" / "forgotten.parquet"
    assert keyed_digest(ensure_secret(other), "gone-user") not in entries  # per-set secrets


def test_unkeyed_tombstones_of_older_sets_are_honoured_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "forgotten.parquet"
    write_digests(path, frozenset({legacy_digest("old-user"), legacy_digest("older")}))
    assert not key_path(path).exists()
    tombstones = Tombstones(path, refresh_s=0.0)
    assert tombstones.contains("old-user") and tombstones.mask(["x", "older"]) == [False, True]
    assert exclude_forgotten(pl.LazyFrame({"user_id": ["older", "k"]}), path).collect()[
        "user_id"
    ].to_list() == ["k"]
    assert not tombstones.add("old-user")  # already forgotten: its entry becomes keyed
    entries = set(pl.read_parquet(path)["user_digest"].to_list())
    assert legacy_digest("old-user") not in entries and legacy_digest("older") in entries
    assert Tombstones(path).contains("old-user") and Tombstones(path).contains("older")
    assert tombstones.add("new-user") and Tombstones(path).contains("new-user")


def test_the_trainer_leaves_forgotten_users_out_whatever_the_id_type(tmp_path: Path) -> None:
    path = tmp_path / "forgotten.parquet"
    secret = ensure_secret(path)
    write_digests(path, frozenset({keyed_digest(secret, "7"), legacy_digest("u2")}))
    ints = pl.LazyFrame({"user_id": [5, 7, 7, 9], "item_id": ["a", "b", "c", "d"]})
    assert exclude_forgotten(ints, path).collect()["user_id"].to_list() == [5, 9]
    text = pl.LazyFrame({"user_id": ["u1", "u2", None]})
    assert exclude_forgotten(text, path).collect()["user_id"].to_list() == ["u1", None]
    assert exclude_forgotten(text, tmp_path / "none.parquet").collect().height == 3


def test_pseudonyms_are_keyed_and_stable() -> None:
    key = b"k" * 16
    assert pseudonym(key, "u1") == pseudonym(key, "u1") != pseudonym(b"j" * 16, "u1")
    assert len(pseudonym(key, "u1")) == 64 and "u1" not in pseudonym(key, "u1")
    assert pseudonym(key, "") == ""
