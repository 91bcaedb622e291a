"""One ``cgat-bench run`` process in its own process group, its output read line by line, and killed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.perf.soak.site import REPO_ROOT, child_env
from benchmarks.process_groups import stop_process_group


NEIGHBOR_MODULE = b"pymatgen/optimization/neighbors"  # a compiled module loaded by the first graph build
_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+):")

def marker_of(line: str) -> tuple[str, int, int] | None:
    """The phase marker of an output line: (name, epoch, epochs); epoch numbers only for epoch lines."""
    text = line.strip()
    if text.startswith("graphs:"):
        return ("graphs", 0, 0)
    if text.startswith(("[run]", "[resume]")):  # a run starts (afresh or from its last.pt)
        return ("run", 0, 0)
    if text.startswith("[done]"):
        return ("done", 0, 0)
    if text.startswith("done in "):
        return ("finished", 0, 0)
    if text.startswith("report:"):
        return ("report", 0, 0)
    match = _EPOCH_LINE.match(text)
    if match:
        return ("epoch", int(match.group(1)), int(match.group(2)))
    return None


class Process:
    """``cgat-bench run`` in its own process group, its output read line by line with timestamps."""

    def __init__(self, command: list[str], name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.popen = subprocess.Popen(
            command, cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
            # its own group for killpg, in this session (and CPU autogroup: it runs at our priority)
            process_group=0,
        )
        self.lines: list[tuple[float, str]] = []  # (seconds since start, line)
        self.events: list[tuple[float, str, int, int]] = []  # (seconds, marker, epoch, epochs)
        self.killed_at: float | None = None
        self.building_at_kill = False
        self.exit_code: int | None = None
        self.wall_s: float | None = None  # start to exit
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            now = time.monotonic() - self.started
            self.lines.append((now, line.rstrip("\n")))
            marker = marker_of(line)
            if marker is not None:
                self.events.append((now, *marker))

    def now(self) -> float:
        return time.monotonic() - self.started

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group (graph-build and --workers processes too) and wait until it is gone."""
        if self.killed_at is None and self.running:
            _signal_group(self.popen.pid, signal.SIGSTOP)  # frozen where it is, then looked at
            self.killed_at = self.now()
            # only read when nothing was printed yet: landed_phase needs it only then
            self.building_at_kill = not self.events and self.building_graphs()
        _kill_group(self.popen)
        self.wall_s = self.now()
        self._reader.join(timeout=10)

    def building_graphs(self) -> bool:
        """Whether the process has begun building graphs: pymatgen's neighbour search, imported on
        first use, is mapped (it never is when every graph comes from the cache). The leader's map
        only: the soak's 200 structures are below the count that builds in worker processes."""
        try:
            with open(f"/proc/{self.popen.pid}/maps", "rb") as maps:
                return NEIGHBOR_MODULE in maps.read()
        except OSError:
            return False

    def finish(self, timeout: float) -> int | None:
        """Wait for the process; None (and the group killed) past ``timeout``."""
        try:
            self.exit_code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.popen)
            self.exit_code = None
        self.wall_s = self.now()
        self._reader.join(timeout=10)
        return self.exit_code

    def events_before(self, seconds: float) -> list[tuple[float, str, int, int]]:
        return [event for event in list(self.events) if event[0] <= seconds]

    def write_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{seconds:9.3f}  {line}\n" for seconds, line in self.lines))

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def errors(self) -> list[str]:
        """Failed runs and tracebacks in the output (a kill itself prints nothing)."""
        return [
            line.strip()
            for _, line in self.lines
            if line.lstrip().startswith(("[failed]", "FAILED ", "Traceback (most recent call last)"))
        ]


def _signal_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL the group, reap its leader, and return once no member of it runs."""
    _signal_group(popen.pid)
    popen.wait()
    stop_process_group(popen.pid, timeout_s=10.0, signals=(signal.SIGKILL,), poll_s=0.02)
