"""The feedback log's folders are durable before anything in them is acknowledged: opening a
log in folders that do not exist yet fsyncs each new folder's entry in its parent (else a
crash could drop the folder, and every fsynced segment in it, at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reachrank.v1 import feedback_pb2

from engine.feedback import files
from engine.feedback.log import FeedbackLog


def test_new_folders_are_fsynced_in_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = files.fsync_dir

    def recording(directory: Path) -> None:
        synced.append(Path(directory))
        real(directory)

    monkeypatch.setattr(files, "fsync_dir", recording)
    directory = tmp_path / "a" / "b" / "feedback"
    with FeedbackLog(directory) as log:
        log.append([feedback_pb2.FeedbackEvent(user_id="u", item_id="i", event="click")])
    # Each new folder's parent, up to the existing tmp_path, in creation order.
    assert synced[:4] == [tmp_path, tmp_path / "a", tmp_path / "a" / "b", directory]
    assert (directory / "parquet").is_dir()


def test_make_dirs_on_existing_folders_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(files, "fsync_dir", synced.append)
    files.make_dirs(tmp_path)
    assert synced == []
