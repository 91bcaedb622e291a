"""Process groups stopped as a whole: a server with its workers, a cgat-bench run with its graph-build
and worker processes (Linux: members are found in /proc)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path


def group_running(pgid: int) -> bool:
    """Whether a process of the group still runs (exited ones awaiting their parent do not count)."""
    try:
        os.waitpid(pgid, os.WNOHANG)  # reap the leader if it is our child
    except ChildProcessError:
        pass
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp
            return True
    return False


def stop_process_group(
    pgid: int, timeout_s: float = 30.0, signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL), poll_s: float = 0.2
) -> None:
    """Send each of ``signals`` to the group in turn, moving to the next after ``timeout_s``; returns
    when none of its processes runs. A leader that is a ``subprocess.Popen`` child should be waited
    for first, or its exit status is reaped here."""
    for sig in signals:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not group_running(pgid):
                return
            time.sleep(poll_s)
