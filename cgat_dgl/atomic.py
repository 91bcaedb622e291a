"""Atomic file writes: a killed process leaves the old file or the new one, never half of either."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it is synced and renamed onto ``path``.

    The temporary file's name holds the writer's host and pid, so that the next write into the same
    folder removes what a killed writer left behind (a cache pack's can be hundreds of MB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temps(path.parent)
    prefix = f".{path.name}{_host_marker()}{os.getpid()}."
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _host_marker() -> str:
    return f".{socket.gethostname()}-"


def is_temporary_name(name: str) -> bool:
    """Whether a file name is that of an atomic write's temporary file made on this host."""
    return name.startswith(".") and name.endswith(".tmp") and _host_marker() in name


def remove_abandoned_temps(folder: Path) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer, a process of this host, is gone."""
    marker = _host_marker()
    removed = []
    for temp in Path(folder).glob(f".*{glob.escape(marker)}*.tmp"):
        pid = temp.name.rsplit(marker, 1)[1].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
