"""The experiments file: the durable source of truth every server process shares.

Experiments set or deleted by RPC are written here (under an exclusive lock, merged with what
other processes wrote, replaced atomically), and each process polls the file, so every worker
of `serve --workers N` and every restart serves the same experiments. Without a file,
experiments set by RPC live only in the memory of the process that received them.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from google.protobuf import json_format
from reachrank.v1 import models_pb2

from engine.experiments import load_experiments

Stamp = tuple[int, int, int]


class ExperimentFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(f".{self.path.name}.lock")

    def stamp(self) -> Stamp | None:
        """What identifies the file's current content (None while it does not exist)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def read(self) -> list[models_pb2.Experiment]:
        """The experiments in the file ([] when it does not exist yet); ExperimentError names
        the file and entry of a bad one."""
        if not self.path.exists():
            return []
        return load_experiments(self.path)

    def write(self, experiments: Iterable[models_pb2.Experiment]) -> None:
        """Replace the file atomically (a reader sees the old or the new file, never half)."""
        document = {
            "experiments": [
                json_format.MessageToDict(e) for e in sorted(experiments, key=lambda e: e.name)
            ]
        }
        write_json_atomically(self.path, document)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads (each call opens its own descriptor)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomically(path: Path, document: object) -> None:
    """Replace ``path`` with ``document`` as JSON: written to a temporary file, fsynced, renamed
    over it, and the directory fsynced (a reader sees the old or the new file, never half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
