"""A disk that loses, on a simulated power cut, everything that was not fsynced.

:class:`PowerCutDisk` stands in for the ``os`` module of the code under test
(``monkeypatch.setattr(module, "os", disk)``) and passes every call through to the real one,
but remembers what each ``fsync`` made durable: a regular file's bytes (by inode) and a
directory's entries (name -> inode). :meth:`PowerCutDisk.ack` records, when the code under
test acknowledges something, what a power cut at that moment would leave on disk:

- a name survives only if its directory was fsynced while it was there, and it has not been
  removed or replaced since (an unsynced unlink or rename may or may not have reached disk:
  the model takes whichever loses the acknowledged data);
- a surviving file holds what it held at its inode's last fsync (nothing if never fsynced).

The state is read just before the real ``fsync`` runs, so a write racing with it counts as not
yet durable: the model never credits more than the kernel promised. Of two fsyncs of one file
or directory that overlap (a converter thread and an appender both fsync the log directory),
the state read last wins, whichever finishes first.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Inode = tuple[int, int]


@dataclass(frozen=True)
class Entry:
    inode: Inode
    is_dir: bool


@dataclass(frozen=True)
class Ack:
    """What the code under test acknowledged, and what a power cut right then would leave."""

    label: Any
    survivors: dict[str, bytes]  # path relative to the root -> durable bytes


class PowerCutDisk:
    def __init__(self, root: Path, *, forget_file_fsyncs: bool = False) -> None:
        self.root = Path(root)
        # A disk whose file fsyncs are lies (a negative control for the tests' checks).
        self._forget_files = forget_file_fsyncs
        self._lock = threading.Lock()
        # What each fsync made durable, with the number of the read it came from.
        self._files: dict[Inode, tuple[int, bytes]] = {}
        self._dirs: dict[str, tuple[int, dict[str, Entry]]] = {}
        self._reads = 0
        self.fsyncs: list[tuple[str, str]] = []  # ("file" | "dir", path), in order
        self.acks: list[Ack] = []

    # -- the os module, with fsync watched ------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        inode = (st.st_dev, st.st_ino)
        is_dir = stat.S_ISDIR(st.st_mode)
        with self._lock:
            self._reads += 1
            read = self._reads
            # Read under the lock: a later read number always means a later state.
            if is_dir:
                listing = _listing(Path(path))
            else:
                with open(f"/proc/self/fd/{fd}", "rb") as handle:
                    data = handle.read()
        os.fsync(fd)
        with self._lock:
            if is_dir:
                if read > self._dirs.get(path, (0, {}))[0]:
                    self._dirs[path] = (read, listing)
                self.fsyncs.append(("dir", path))
                return
            if not self._forget_files and read > self._files.get(inode, (0, b""))[0]:
                self._files[inode] = (read, data)
            self.fsyncs.append(("file", path))

    # -- acknowledgements -----------------------------------------------------------------

    def ack(self, label: Any) -> None:
        """Record that ``label`` was just acknowledged (call it right when the ack returns)."""
        with self._lock:
            self.acks.append(Ack(label, self._after_power_cut()))

    def after_power_cut(self) -> dict[str, bytes]:
        with self._lock:
            return self._after_power_cut()

    def _after_power_cut(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}

        def walk(directory: Path) -> None:
            durable = self._dirs.get(str(directory), (0, {}))[1]
            try:
                current = _listing(directory)
            except FileNotFoundError:
                return
            for name, entry in durable.items():
                now = current.get(name)
                if now is None or now.is_dir != entry.is_dir:
                    continue  # removed since its directory was fsynced: may be gone
                if entry.is_dir:
                    walk(directory / name)
                else:
                    rel = str((directory / name).relative_to(self.root))
                    found[rel] = self._files.get(entry.inode, (0, b""))[1]

        walk(self.root)
        return found


def _listing(directory: Path) -> dict[str, Entry]:
    listing = {}
    with os.scandir(directory) as entries:
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            listing[e.name] = Entry((st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode))
    return listing
