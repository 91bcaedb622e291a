"""Temporary files of atomic writes (checkpoints, graph-cache packs) seen as they appear."""

from __future__ import annotations

import ctypes
import os
import select
import struct
import time
from pathlib import Path

from cgat_dgl.atomic import is_temporary_name


def temp_files(folder: Path) -> set[str]:
    """Temporary files of atomic writes (``cgat_dgl.atomic``) anywhere under ``folder``."""
    found: set[str] = set()
    if not folder.exists():
        return found
    for directory, _, files in os.walk(folder):
        found.update(os.path.join(directory, name) for name in files if is_temporary_name(name))
    return found


def scan(folder: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except FileNotFoundError:
        return []


class TempWatch:
    """New temporary files (``is_temporary_name``: an atomic write in progress) in folders and their subfolders
    as they are created, from inotify: a checkpoint's write lasts milliseconds, shorter than a poll.
    Without inotify (not Linux), ``wait`` sleeps and ``fired`` polls the folders."""

    IN_CREATE, IN_MOVED_TO, IN_ISDIR = 0x100, 0x80, 0x40000000

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.before = set().union(*(temp_files(folder) for folder in folders))
        self.seen = False
        self._fd: int | None = None
        self._paths: dict[int, str] = {}
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            return
        self._fd = fd
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._add(str(folder))
            for entry in scan(folder):
                if entry.is_dir():
                    self._add(entry.path)

    def _add(self, path: str) -> None:
        assert self._fd is not None
        wd = self._libc.inotify_add_watch(self._fd, path.encode(), self.IN_CREATE | self.IN_MOVED_TO)
        if wd >= 0:
            self._paths[wd] = path

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``, waking at once when a temporary file appears; whether one did."""
        if self._fd is None:
            time.sleep(timeout)
            self.seen = self.seen or bool(set().union(*map(temp_files, self.folders)) - self.before)
            return self.seen
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return self.seen
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return self.seen
        offset = 0
        while offset + 16 <= len(data):
            wd, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode(errors="replace")
            offset += 16 + length
            parent = self._paths.get(wd)
            if parent is None:
                continue
            if mask & self.IN_ISDIR:
                self._add(os.path.join(parent, name))  # a run's new checkpoint folder
            elif is_temporary_name(name):
                self.seen = True
        return self.seen

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
