"""Durable file operations: a rename or a new file survives a crash only once its directory
entry is fsynced too."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """``mkdir -p`` whose new folders survive a crash: each one's entry is fsynced in its
    parent as it is made (a file fsynced inside a folder whose own entry is not durable can
    vanish with it)."""
    missing = []
    path = Path(directory)
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        fsync_dir(folder.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Make a fully written ``tmp`` durable, then atomically visible as ``final``."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
