"""Soak test of ``cgat-bench run``: a smoke manifest killed (SIGKILL) again and again, then finished.

    python -m benchmarks.perf.soak                    # 20 kills, seed 0
    python -m benchmarks.perf.soak --n 4 --dir /tmp/soak --keep

First an uninterrupted reference run of the manifest into its own store (fresh MLflow database, work
folder and graph cache). Then the soak store: ``--n`` attempts, each starting ``cgat-bench run`` (a
subprocess in its own process group) and SIGKILLing the group at a chosen moment, and a last run to
completion without a kill. Finally every run of the reference must be FINISHED exactly once in the
soak store, no run may be left RUNNING, and every final metric must equal the reference's.

Where a kill lands is aimed, not left to a random clock: the script reads the merged stdout/stderr of
``cgat-bench run`` (progress on, so that epoch lines come as plain lines) and kills a random short time
after a phase's marker appears:

    startup            a random moment before the data is loaded (graph cache present)
    graph_build        the graph cache deleted first; a moment after the build began (pymatgen's neighbour
                       search mapped into the process), or as soon as the cache pack's temporary file appears
    run_start          after "[run]": claims, parent/child runs, params and config logged to MLflow
    training           after "[run]": inside the epochs
    checkpoint_write   as soon as a checkpoint's temporary file appears (inotify: the atomic write is in
                       progress for milliseconds)
    epoch_end          just after an "epoch i/n" line: the epoch's MLflow metrics being logged
    run_end            after the last "epoch n/n" line: test evaluation, final metrics and artifacts
    report             after "done in" (the report), or just after sources.md is written (the report
                       run being logged to MLflow); these attempts run without --no-report
    exit               (landed only) after the report's "report:" line

The phase recorded for a kill is where it landed (the last marker the killed process printed, whether
it had begun building graphs, and a temporary file left behind by a write cut short), which may differ
from the one aimed at; the table counts both. Delays after a marker are scaled by the reference run's
timing (epoch length, run set-up, report). The cgat-bench processes run in this process's session, so
at its CPU priority. Their output is kept in <dir>/logs/.
Every third attempt runs two workers at once: two ``cgat-bench run`` processes (both killed together,
or one and then the other a little later) or one with ``--workers 2``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.sample_data import write_gap_sample

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "soak.json"
PROFILE = "smoke"
KEY_METRICS = ("test_mae", "best_val_mae", "best_epoch", "test_rmse")
PHASES = (
    "startup", "graph_build", "run_start", "training", "checkpoint_write", "epoch_end", "run_end", "report", "exit",
)
TRAINING_TARGETS = ("graph_build", "startup", "run_start", "training", "checkpoint_write", "epoch_end", "run_end")
IDLE_TARGETS = ("startup", "graph_build", "report")  # what is left to hit once every run is finished
NO_EPOCH_LINES = ("epoch_end", "run_end")  # --workers 2: pool workers print no epoch lines
EPOCH_LOG_S = 0.05  # after an epoch line: the epoch's metrics go to MLflow
DEFAULT_TIMEOUT_S = 1800.0  # one cgat-bench process; a loaded machine slows them many times
NEIGHBOR_MODULE = b"pymatgen/optimization/neighbors"  # a compiled module loaded by the first graph build
# Variables that would point the runs at another store, claims database or data file.
DROPPED_ENV = ("MLFLOW_TRACKING_URI", "CGAT_CLAIMS_DB", "CGAT_DB_URL", "CGAT_SHARED_DATA")

MANIFEST = """\
data: {{cache_dir: cache}}
profiles:
  {profile}:
    model: smoke
    threads: 1
    device: cpu
    pretrain: {{epochs: {pre_epochs}, batch_size: 32, lr: 1.0e-3, cycle_period: 2}}
    transfer: {{epochs: {epochs}, batch_size: 16, lr: 1.0e-3, cycle_period: 2}}
    max_eval_size: 16
experiments:
  - name: gap
    source: gap_pbe
    target: gap_hse
    strategies: [none, head, full]
    train_sizes: [20, 1.0]
"""

_EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+):")


# --- inputs ------------------------------------------------------------------------------------
def write_manifest(path: Path, pre_epochs: int, epochs: int) -> Path:
    """One pre-training and six transfers (none, head, full at two sizes) of a gap_pbe -> gap_hse task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MANIFEST.format(profile=PROFILE, pre_epochs=pre_epochs, epochs=epochs))
    return path


@dataclass(frozen=True)
class Site:
    """One store and its folders: the manifest, the data and the command line are shared."""

    root: Path
    manifest: Path
    data: Path

    @property
    def db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def report_dir(self) -> Path:
        return self.root / "reports"

    @property
    def sources_file(self) -> Path:
        return self.report_dir / PROFILE / "sources.md"

    def command(self, report: bool = False, workers: int | None = None) -> list[str]:
        command = [
            sys.executable, "-m", "benchmarks.cli", "run", str(self.manifest), "--profile", PROFILE,
            "--data", str(self.data), "--tracking-uri", self.tracking_uri, "--work-dir", str(self.work_dir),
            "--cache-dir", str(self.cache_dir), "--out", str(self.report_dir),
        ]
        if not report:
            command.append("--no-report")
        if workers is not None:
            command += ["--workers", str(workers)]
        return command


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DGLBACKEND", "pytorch")
    return env


# --- one cgat-bench process ----------------------------------------------------------------------
def marker_of(line: str) -> tuple[str, int, int] | None:
    """The phase marker of an output line: (name, epoch, epochs); epoch numbers only for epoch lines."""
    text = line.strip()
    if text.startswith("graphs:"):
        return ("graphs", 0, 0)
    if text.startswith("[run]"):
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
            self.building_at_kill = self.building_graphs()
        _signal_group(self.popen.pid)
        self.popen.wait()
        _wait_group_gone(self.popen.pid)
        self.wall_s = self.now()
        self._reader.join(timeout=10)

    def building_graphs(self) -> bool:
        """Whether the process has begun building graphs: pymatgen's neighbour search, imported on
        first use, is mapped (it never is when every graph comes from the cache)."""
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
            _signal_group(self.popen.pid)
            self.popen.wait()
            _wait_group_gone(self.popen.pid)
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


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL what is left of the group until no live member remains (zombies do not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isdir("/proc") and not _group_members(pgid):
            return
        _signal_group(pgid)
        if not os.path.isdir("/proc"):
            return
        time.sleep(0.02)


def temp_files(folder: Path) -> set[str]:
    """Temporary files of atomic writes (``.name.XXXX.tmp``) anywhere under ``folder``."""
    found: set[str] = set()
    if not folder.exists():
        return found
    for directory, _, files in os.walk(folder):
        found.update(os.path.join(directory, name) for name in files if name.startswith(".") and name.endswith(".tmp"))
    return found


def _temp_appeared(folder: Path, before: set[str]) -> bool:
    """A new temporary file directly in ``folder`` or one level below (the graph cache's packs)."""
    return _temp_in_subfolders(folder, before) or any(
        entry.name.endswith(".tmp") and entry.path not in before for entry in _scan(folder)
    )


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(folder))
    except FileNotFoundError:
        return []


def _temp_in_subfolders(folder: Path, before: set[str]) -> bool:
    """A new temporary file one level below ``folder`` (``checkpoints/<key>/``, ``cache/<params>/``)."""
    try:
        subdirs = [entry.path for entry in os.scandir(folder) if entry.is_dir()]
    except FileNotFoundError:
        return False
    for subdir in subdirs:
        try:
            for entry in os.scandir(subdir):
                if entry.name.endswith(".tmp") and entry.path not in before:
                    return True
        except FileNotFoundError:
            continue
    return False


class TempWatch:
    """New temporary files (``*.tmp``, an atomic write in progress) in folders and their subfolders
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
            for entry in _scan(folder):
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
            self.seen = self.seen or any(_temp_appeared(folder, self.before) for folder in self.folders)
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
            elif name.endswith(".tmp"):
                self.seen = True
        return self.seen

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- calibration from the reference run ----------------------------------------------------------
@dataclass
class Timing:
    """Seconds measured in the reference run, which place the kills of the soak."""

    to_graphs_s: float = 10.0  # process start to the "graphs:" line (graphs built from scratch)
    build_s: float = 2.0  # graph build and cache write inside that
    epoch_s: float = 0.5  # between epoch lines
    setup_s: float = 0.3  # "[run]" to the first epoch's start
    final_s: float = 0.5  # last epoch line to "[done]"
    report_s: float = 5.0  # "done in" to the end of the process
    report_log_s: float = 0.3  # sources.md written to the "report:" line: the report run in MLflow

    @classmethod
    def measure(cls, process: Process, sources: Path | None = None) -> "Timing":
        timing = cls()
        events = process.events
        times = {name: [t for t, n, _, _ in events if n == name] for name in ("graphs", "run", "done", "finished")}
        if times["graphs"]:
            timing.to_graphs_s = times["graphs"][0]
        for _, line in process.lines:
            match = re.search(r"graphs: .* in ([0-9.]+) s \(records read in ([0-9.]+) s; ([0-9.]+) s in all\)", line)
            if match:
                timing.build_s = max(0.2, float(match.group(3)) - float(match.group(2)))
        epochs = [(t, e, n) for t, name, e, n in events if name == "epoch"]
        gaps = [b[0] - a[0] for a, b in zip(epochs, epochs[1:]) if b[1] == a[1] + 1]
        if gaps:
            timing.epoch_s = _median(gaps)
        firsts = [next((t for t, e, _ in epochs if t > start and e == 1), None) for start in times["run"]]
        setups = [first - start - timing.epoch_s for first, start in zip(firsts, times["run"]) if first is not None]
        if setups:
            timing.setup_s = max(0.05, _median(setups))
        lasts = [t for t, e, n in epochs if e == n]
        finals = [next((d - t for d in times["done"] if d >= t), None) for t in lasts]
        if any(f is not None for f in finals):
            timing.final_s = max(0.05, _median([f for f in finals if f is not None]))
        if times["finished"] and process.lines:
            timing.report_s = max(0.5, process.lines[-1][0] - times["finished"][0])
        reports = [t for t, n, _, _ in events if n == "report"]
        if reports and sources is not None and sources.exists():
            written = sources.stat().st_mtime - process.started_wall
            timing.report_log_s = max(0.05, reports[0] - written)
        return timing


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --- where a kill landed -------------------------------------------------------------------------
def landed_phase(events: list[tuple[float, str, int, int]], at: float, building: bool, setup_s: float) -> str:
    """The phase a kill at ``at`` seconds hit, from the markers printed before it (and, before the
    data is loaded, whether the process had begun building graphs)."""
    if not events:
        return "graph_build" if building else "startup"
    seconds, name, epoch, epochs = events[-1]
    since = at - seconds
    if name == "finished":
        return "report"
    if name == "report":
        return "exit"  # the report run ended, its paths printed: only the exit is left
    if name == "run":
        return "run_start" if since < setup_s else "training"
    if name == "epoch":
        if epoch == epochs:
            return "run_end"
        return "epoch_end" if since < EPOCH_LOG_S else "training"
    return "run_start"  # after "graphs:" or "[done]": the next run being claimed and opened


@dataclass
class Kill:
    process: str
    target: str  # the phase aimed at
    phase: str  # the phase it landed in
    at_s: float  # seconds after the process started
    trigger: str  # what the kill waited for
    delay_s: float  # after the trigger


@dataclass
class Attempt:
    index: int
    mode: str  # single, two_processes, workers_2
    target: str
    report: bool
    cache_deleted: bool
    kills: list[Kill] = field(default_factory=list)
    exits: dict[str, int | None] = field(default_factory=dict)  # processes that ended on their own
    checkpoint_temps_left: int = 0
    cache_temps_left: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


# --- the soak ------------------------------------------------------------------------------------
class Soak:
    """The killed attempts on one store; each attempt draws from its own seeded generator, so that a
    plan does not shift when an earlier attempt took another branch."""

    def __init__(
        self, site: Site, timing: Timing, seed: int, log_dir: Path | None = None, pack_dir: str | None = None,
        poll_s: float = 0.01, timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.site = site
        self.timeout_s = timeout_s
        self.timing = timing
        self.seed = seed
        self.log_dir = log_dir
        self.pack_dir = pack_dir  # the graph cache's folder of packs (its name holds the graph parameters)
        self.poll_s = poll_s
        self.observed_to_graphs: list[float] = []  # processes of earlier attempts with a warm cache

    def rng(self, index: int, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}:{index}:{purpose}")

    def trigger(self, target: str, rng: random.Random) -> tuple[str, float]:
        """What a kill aimed at ``target`` waits for, and the delay after it."""
        t, u = self.timing, rng.uniform
        if target == "startup":
            return "start", u(0.3, max(0.5, self.to_data_s()))
        if target == "graph_build":
            if rng.random() < 0.5:
                return "cache_temp", 0.0  # the cache pack being written
            return "graph_build_started", u(0.0, t.build_s)
        if target == "run_start":
            return ("graphs" if rng.random() < 0.25 else "run"), u(0.0, t.setup_s)
        if target == "training":
            return "run", u(t.setup_s, t.setup_s + 2 * t.epoch_s)
        if target == "checkpoint_write":
            return "checkpoint_temp", 0.0
        if target == "epoch_end":
            return "epoch", u(0.0, EPOCH_LOG_S)
        if target == "run_end":
            return "last_epoch", u(0.0, t.final_s)
        if target == "report":
            if rng.random() < 0.5:
                return "sources", u(0.0, 0.6 * t.report_log_s)
            return "finished", u(0.0, t.report_s)
        raise ValueError(f"unknown phase {target!r}")

    def to_data_s(self) -> float:
        """Seconds from a process's start to the data loaded from a warm cache: the median of the
        attempts so far (the reference built its graphs, often on a colder machine), else the
        reference's time less its build."""
        if self.observed_to_graphs:
            return _median(self.observed_to_graphs)
        return self.timing.to_graphs_s - self.timing.build_s

    def delete_cache(self) -> None:
        """Remove the graph cache (packs and splits); its empty pack folder is made again, so that the
        pack write can be watched from its first temporary file."""
        shutil.rmtree(self.site.cache_dir, ignore_errors=True)
        if self.pack_dir:
            (self.site.cache_dir / self.pack_dir).mkdir(parents=True, exist_ok=True)

    def attempt(self, index: int, mode: str, target: str) -> Attempt:
        rng = self.rng(index, "kill")
        report = target == "report"
        cache_deleted = target == "graph_build"
        if cache_deleted:
            self.delete_cache()
        checkpoints = self.site.work_dir / "checkpoints"
        before_ckpt, before_cache = temp_files(checkpoints), temp_files(self.site.cache_dir)
        sources_mtime = self.site.sources_file.stat().st_mtime_ns if self.site.sources_file.exists() else 0
        trigger, delay = self.trigger(target, rng)
        kill_one_first = mode == "two_processes" and rng.random() < 0.5
        second_delay = rng.uniform(0.5, 3.0)
        watch = None
        if trigger == "checkpoint_temp":
            watch = TempWatch([checkpoints])
        elif trigger == "cache_temp":
            watch = TempWatch([self.site.cache_dir])
        record = Attempt(index, mode, target, report, cache_deleted)
        started = time.monotonic()
        if mode == "workers_2":
            processes = [Process(self.site.command(report, workers=2), "a")]
        else:
            count = 2 if mode == "two_processes" else 1
            processes = [Process(self.site.command(report), name) for name in ("a", "b")[:count]]
        fired_at: float | None = None  # monotonic time of the trigger
        fired_by: Process = processes[0]
        second_kill: float | None = None  # two processes, one killed first: when the other goes
        try:
            while True:
                now = time.monotonic()
                if now - started > self.timeout_s:
                    record.errors.append(f"attempt {index}: still running after {self.timeout_s:.0f} s (hung?)")
                    for process in processes:
                        process.kill()
                    break
                if fired_at is None:
                    fired = self._fired(trigger, processes, started, watch, sources_mtime)
                    if fired is not None:
                        fired_at, fired_by = fired
                        now = time.monotonic()
                if fired_at is not None and now >= fired_at + delay and fired_by.killed_at is None:
                    for process in [fired_by] if kill_one_first else processes:
                        if process.running:
                            process.kill()
                            record.kills.append(self._kill_record(process, target, trigger, delay))
                    if not any(p.killed_at is None and p.running for p in processes):
                        break
                    second_kill = time.monotonic() + second_delay
                if second_kill is not None and now >= second_kill:
                    for process in processes:
                        if process.killed_at is None and process.running:
                            process.kill()
                            record.kills.append(self._kill_record(process, "(second)", "first kill", second_delay))
                    break
                if not any(p.running for p in processes):
                    break
                if watch is not None and fired_at is None:
                    watch.wait(self.poll_s)
                else:
                    # the report run lives a tenth of a second after sources.md: look closely
                    time.sleep(0.002 if trigger == "sources" and fired_at is None else self.poll_s)
        finally:
            if watch is not None:
                watch.close()
        for process in processes:
            if process.killed_at is None:
                code = process.finish(self.timeout_s)
                record.exits[process.name] = code
                if code is None:
                    record.errors.append(f"attempt {index} process {process.name}: hung")
                elif code != 0:
                    record.errors.append(f"attempt {index} process {process.name}: exit {code}: {_tail(process)}")
            record.errors += [f"attempt {index} process {process.name}: {line}" for line in process.errors()]
            if not cache_deleted and mode == "single":
                self.observed_to_graphs += [t for t, name, _, _ in process.events if name == "graphs"][:1]
            if self.log_dir is not None:
                process.write_log(self.log_dir / f"attempt-{index:03d}-{process.name}.log")
        record.checkpoint_temps_left = len(temp_files(checkpoints) - before_ckpt)
        record.cache_temps_left = len(temp_files(self.site.cache_dir) - before_cache)
        if record.kills and record.checkpoint_temps_left:
            record.kills[0].phase = "checkpoint_write"  # a write cut short leaves its temporary file
        elif record.kills and record.cache_temps_left:
            record.kills[0].phase = "graph_build"
        record.wall_s = round(time.monotonic() - started, 3)
        return record

    def _fired(
        self, trigger: str, processes: list[Process], started: float, watch: TempWatch | None, sources_mtime: int
    ) -> tuple[float, Process] | None:
        now = time.monotonic()
        if trigger == "start":
            return started, processes[0]
        if trigger in ("checkpoint_temp", "cache_temp"):
            assert watch is not None
            if watch.seen:
                return now, (_last_to_run(processes) if trigger == "checkpoint_temp" else processes[0])
            return None
        if trigger == "graph_build_started":
            # /proc/<pid>/maps is long: read it only from half the usual time to the data on
            if now - started < 0.5 * max(0.0, self.to_data_s()):
                return None
            for process in processes:
                if process.building_graphs():
                    return now, process
            return None
        if trigger == "sources":
            path = self.site.sources_file
            if path.exists() and path.stat().st_mtime_ns > sources_mtime:
                return now, processes[0]
            return None
        for process in processes:
            for seconds, name, epoch, epochs in list(process.events):
                if (
                    (trigger == name and trigger != "epoch")
                    or (trigger == "epoch" and name == "epoch" and epoch < epochs)
                    or (trigger == "last_epoch" and name == "epoch" and epoch == epochs)
                ):
                    return process.started + seconds, process
        return None

    def _kill_record(self, process: Process, target: str, trigger: str, delay: float) -> Kill:
        at = process.killed_at if process.killed_at is not None else process.now()
        phase = landed_phase(process.events_before(at), at, process.building_at_kill, self.timing.setup_s)
        return Kill(process.name, target, phase, round(at, 3), trigger, round(delay, 3))


def _last_to_run(processes: list[Process]) -> Process:
    """The process most recently starting a run (the likely writer of a checkpoint)."""
    latest = max(processes, key=lambda p: max((t for t, n, _, _ in p.events if n == "run"), default=-1.0))
    return latest


def _tail(process: Process, lines: int = 8) -> str:
    return " | ".join(line for _, line in process.lines[-lines:])


def plan_attempts(n: int) -> list[tuple[str, str | None]]:
    """(mode, target) for each attempt; a target of None is chosen when the attempt starts (it depends
    on whether any run is left to train). Every third attempt runs two workers; the last ones aim at
    the report (which comes only after every run has finished)."""
    reports = max(1, round(n / 5))
    modes = []
    pairs = 0
    for index in range(n):
        if index % 3 == 2:
            modes.append("two_processes" if pairs % 2 == 0 else "workers_2")
            pairs += 1
        else:
            modes.append("single")
    return [(mode, "report" if index >= n - reports else None) for index, mode in enumerate(modes)]


def choose_target(mode: str, training_left: bool, turn: int, order: list[str], rng: random.Random) -> str:
    if not training_left:
        return rng.choice(IDLE_TARGETS)
    target = order[turn % len(order)]
    if mode == "workers_2" and target in NO_EPOCH_LINES:
        target = rng.choice(("checkpoint_write", "training"))
    return target


# --- the stores ----------------------------------------------------------------------------------
@dataclass
class RunRecord:
    run_id: str
    status: str
    key: str | None  # cgat.run_key, None for parents and reports
    kind: str  # pretrain, transfer, parent, report, or untagged
    metrics: dict[str, float]
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # per-epoch metrics, by step


def read_store(tracking_uri: str, histories: bool = False) -> list[RunRecord]:
    """Every run of the benchmark's experiment in a store, deleted ones too; with ``histories``, the
    per-epoch metrics of keyed runs, every logged value in step order."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from benchmarks.store import EXPERIMENT, KEY_TAG
    from cgat_dgl.training.trainer import EPOCH_METRICS

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).exists():
        return []  # not made here: the first cgat-bench run creates the database (and may be killed doing so)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    records, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        for run in page:
            tags = run.data.tags
            kind = tags.get("cgat.kind") or ("parent" if tags.get("cgat.parent") == "1" else "untagged")
            record = RunRecord(run.info.run_id, run.info.status, tags.get(KEY_TAG), kind, dict(run.data.metrics))
            if histories and record.key:
                for name in EPOCH_METRICS:
                    logged = client.get_metric_history(run.info.run_id, name)
                    record.histories[name] = [(m.step, m.value) for m in sorted(logged, key=lambda m: (m.step, m.timestamp))]
            records.append(record)
        token = page.token
        if not token:
            return records


def training_left(tracking_uri: str, keys: set[str]) -> bool:
    finished = {r.key for r in read_store(tracking_uri) if r.key and r.status == "FINISHED"}
    return bool(keys - finished)


def _equal(reference: float, value: float | None, rtol: float) -> bool:
    if value is None:
        return False
    if math.isnan(reference) or math.isnan(value):
        return math.isnan(reference) and math.isnan(value)
    return value == reference if rtol == 0 else math.isclose(value, reference, rel_tol=rtol, abs_tol=0.0)


def compare_stores(reference: list[RunRecord], soak: list[RunRecord], rtol: float = 0.0) -> dict[str, Any]:
    """The checks of the soak store against the reference store.

    lost: reference keys with no FINISHED run in the soak; duplicated: keys with more than one FINISHED
    run; left_running: every RUNNING run of the soak store (keyed or not: a parent or report run killed
    before it ended counts too); mismatches: final metrics of the reference's keyed runs that differ in
    the soak's FINISHED run (all of the reference's metrics, ``KEY_METRICS`` at least, and the whole
    history of each per-epoch metric the reference read)."""
    expected = {r.key: r for r in reference if r.key and r.status == "FINISHED"}
    problems = [
        f"reference run {r.run_id} ({r.key}) is {r.status}" for r in reference if r.key and r.status != "FINISHED"
    ]
    counts: dict[str, int] = {}
    for r in reference:
        if r.key and r.status == "FINISHED":
            counts[r.key] = counts.get(r.key, 0) + 1
    problems += [f"reference key {key} FINISHED {n} times" for key, n in counts.items() if n > 1]
    finished: dict[str, list[RunRecord]] = {}
    runs_per_key: dict[str, int] = {}
    for r in soak:
        if r.key:
            runs_per_key[r.key] = runs_per_key.get(r.key, 0) + 1
            if r.status == "FINISHED":
                finished.setdefault(r.key, []).append(r)
    lost = sorted(key for key in expected if key not in finished)
    duplicated = {key: len(runs) for key, runs in sorted(finished.items()) if len(runs) > 1}
    running = [
        {"run_id": r.run_id, "kind": r.kind, "key": r.key} for r in soak if r.status == "RUNNING"
    ]
    mismatches: list[dict[str, Any]] = []
    compared = 0
    for key, ref in sorted(expected.items()):
        if key not in finished:
            continue
        for run in finished[key]:
            for name in sorted(set(ref.metrics) | set(KEY_METRICS)):
                value = run.metrics.get(name)
                if name not in ref.metrics:
                    mismatches.append({"key": key, "kind": ref.kind, "metric": name, "reference": None, "soak": value})
                    continue
                compared += 1
                if not _equal(ref.metrics[name], value, rtol):
                    mismatches.append(
                        {"key": key, "kind": ref.kind, "metric": name, "reference": ref.metrics[name], "soak": value}
                    )
            for name, history in sorted(ref.histories.items()):
                # every epoch logged once, with the uninterrupted run's value (none lost, none twice)
                compared += 1
                logged = run.histories.get(name, [])
                same = len(logged) == len(history) and all(
                    step == ref_step and _equal(ref_value, value, rtol)
                    for (ref_step, ref_value), (step, value) in zip(history, logged)
                )
                if not same:
                    mismatches.append({"key": key, "kind": ref.kind, "metric": f"{name} (every epoch)",
                                       "reference": history, "soak": logged})
    extra_keys = sorted(key for key in finished if key not in expected)
    return {
        "runs_expected": len(expected),
        "runs_finished": sum(1 for key in expected if key in finished),
        "lost": lost,
        "duplicated": duplicated,
        "left_running": running,
        "mismatches": mismatches,
        "metrics_compared": compared,
        "keys_with_several_runs": {k: n for k, n in sorted(runs_per_key.items()) if n > 1},
        "unexpected_keys": extra_keys,
        "reference_problems": problems,
    }


# --- main ----------------------------------------------------------------------------------------
def run_uninterrupted(site: Site, report: bool, timeout_s: float) -> Process:
    process = Process(site.command(report), "reference" if report else "final")
    process.finish(timeout_s)
    return process


def summarize(result: dict[str, Any]) -> str:
    lines = ["", "soak of cgat-bench run", ""]
    lines.append(f"{'phase':<18}{'aimed':>7}{'landed':>8}")
    for phase in PHASES:
        aimed, landed = result["phase_aimed"].get(phase, 0), result["phase_hits"].get(phase, 0)
        lines.append(f"{phase:<18}{aimed:>7}{landed:>8}")
    c = result["comparison"]
    rows = [
        ("attempts", f"{result['n']} ({result['attempts_with_two_workers']} with two workers, "
                     f"{result['attempts_without_kill']} ended before the kill)"),
        ("kills", str(result["kills"])),
        ("kills survived", f"{result['kills_survived']} / {result['kills']}"),
        ("writes cut short", f"{result['checkpoint_temps_left']} checkpoint, {result['cache_temps_left']} graph cache "
                             "(temporary files left by the kill)"),
        ("temporary files at the end", str(result["temps_left_at_end"])),
        ("runs expected", str(c["runs_expected"])),
        ("runs lost", str(len(c["lost"]))),
        ("runs duplicated", str(len(c["duplicated"]))),
        ("runs left RUNNING", str(len(c["left_running"]))),
        ("metric mismatches", f"{len(c['mismatches'])} (of {c['metrics_compared']} compared, rtol {result['rtol']:g})"),
        ("errors", str(len(result["errors"]))),
        ("wall time", f"{result['wall_s']:.0f} s (reference {result['reference_wall_s']:.0f} s, "
                      f"final run {result['final_wall_s']:.0f} s)"),
    ]
    lines.append("")
    width = max(len(name) for name, _ in rows) + 2
    lines += [f"{name:<{width}}{value}" for name, value in rows]
    for run in c["left_running"]:
        lines.append(f"  RUNNING {run['kind']} run {run['run_id']} {run['key'] or ''}")
    for key in c["lost"]:
        lines.append(f"  lost {key}")
    for key, n in c["duplicated"].items():
        lines.append(f"  duplicated {key}: {n} FINISHED runs")
    for m in c["mismatches"][:20]:
        lines.append(f"  mismatch {m['key']} {m['metric']}: reference {str(m['reference'])[:160]}, "
                     f"soak {str(m['soak'])[:160]}")
    for error in result["errors"][:20]:
        lines.append(f"  error: {error[:300]}")
    lines.append("")
    failed = [name for name, ok in result["checks"].items() if not ok]
    lines.append("PASS" if result["passed"] else "FAIL: " + ", ".join(failed))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="killed attempts (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan and delays (default: 0)")
    parser.add_argument("--rtol", type=float, default=0.0,
                        help="relative tolerance of the metric comparison (default: 0, exact)")
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--source-data", type=Path, default=None,
                        help="the shared data file the small one is drawn from "
                        f"(default: $CGAT_SHARED_DATA or {DEFAULT_DATA})")
    parser.add_argument("--pretrain-epochs", type=int, default=30,
                        help="epochs of the pre-training run (default: 30, so that kills meet training)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of each transfer run (default: 15)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds one cgat-bench process may take before it counts as hung "
                        f"(default: {DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default: {DEFAULT_OUT})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be at least 1")
    source = args.source_data or Path(os.environ.get("CGAT_SHARED_DATA", DEFAULT_DATA))
    if not source.is_file():
        raise SystemExit(f"data not found: {source} (pass --source-data or set $CGAT_SHARED_DATA)")
    temporary = args.dir is None
    root = Path(tempfile.mkdtemp(prefix="cgat-soak-")) if temporary else args.dir.resolve()
    try:
        return _soak(args, source, root)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            print(f"kept {root}")


def _soak(args: argparse.Namespace, source: Path, root: Path) -> int:
    started = time.monotonic()
    for name in ("reference", "soak"):
        shutil.rmtree(root / name, ignore_errors=True)  # a rerun in the same --dir starts afresh
    root.mkdir(parents=True, exist_ok=True)
    data = write_gap_sample(source, root / "small.jsonl.gz")
    manifest = write_manifest(root / "experiments.yaml", args.pretrain_epochs, args.epochs)
    reference, soak_site = Site(root / "reference", manifest, data), Site(root / "soak", manifest, data)

    print(f"reference run (uninterrupted) in {reference.root}", flush=True)
    logs = root / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    ref_process = run_uninterrupted(reference, report=True, timeout_s=args.timeout)
    ref_process.write_log(logs / "reference.log")
    reference_wall = ref_process.wall_s or 0.0
    if ref_process.exit_code != 0:
        print(ref_process.output()[-4000:], file=sys.stderr)
        raise SystemExit(f"the reference run failed (exit {ref_process.exit_code})")
    timing = Timing.measure(ref_process, reference.sources_file)
    reference_runs = read_store(reference.tracking_uri)
    keys = {r.key for r in reference_runs if r.key}
    print(f"  {len(keys)} runs in {reference_wall:.0f} s; timing {asdict(timing)}", flush=True)

    pack_dirs = [p.name for p in _scan(reference.cache_dir) if p.is_dir() and p.name != "splits"]
    soak = Soak(soak_site, timing, args.seed, logs, pack_dirs[0] if len(pack_dirs) == 1 else None,
                timeout_s=args.timeout)
    order = list(TRAINING_TARGETS)
    random.Random(f"{args.seed}:order").shuffle(order)
    attempts: list[Attempt] = []
    turn = 0
    for index, (mode, target) in enumerate(plan_attempts(args.n)):
        if target is None:
            left = training_left(soak_site.tracking_uri, keys)
            target = choose_target(mode, left, turn, order, soak.rng(index, "target"))
            turn += 1
        attempt = soak.attempt(index, mode, target)
        attempts.append(attempt)
        kills = ", ".join(f"{k.process}: {k.phase} at {k.at_s:.1f} s" for k in attempt.kills) or "no kill"
        print(f"attempt {index + 1}/{args.n} {mode:<13} aimed at {target:<16} -> {kills}"
              + (f"  ({len(attempt.errors)} errors)" if attempt.errors else ""), flush=True)

    print("final run (no kill, with the report)", flush=True)
    final = run_uninterrupted(soak_site, report=True, timeout_s=args.timeout)
    final.write_log(logs / "final.log")
    final_errors = list(final.errors())
    if final.exit_code != 0:
        final_errors.append(f"final run: exit {final.exit_code}: {_tail(final)}")
    comparison = compare_stores(
        read_store(reference.tracking_uri, histories=True), read_store(soak_site.tracking_uri, histories=True), args.rtol
    )
    # what the kills' cut-short writes left must be gone once later writes and loads have run
    temps_at_end = sorted(temp_files(soak_site.work_dir / "checkpoints") | temp_files(soak_site.cache_dir))

    kills = [kill for attempt in attempts for kill in attempt.kills]
    # a kill is survived when the processes that ran after it (the rest of its attempt, the next
    # attempt, or the final run) met no error
    later_errors = [a.errors for a in attempts[1:]] + [final_errors]
    survived = sum(len(a.kills) for a, after in zip(attempts, later_errors) if not after and not a.errors)
    errors = [e for a in attempts for e in a.errors] + final_errors + comparison["reference_problems"]
    checks = {
        "kills_survived": survived == len(kills) and len(kills) > 0,
        "runs_lost": not comparison["lost"],
        "runs_duplicated": not comparison["duplicated"],
        "runs_left_running": not comparison["left_running"],
        "metrics_equal": not comparison["mismatches"] and comparison["metrics_compared"] > 0,
        "no_errors": not errors,
        "no_temporary_files_left": not temps_at_end,
    }
    result: dict[str, Any] = {
        "n": args.n,
        "seed": args.seed,
        "rtol": args.rtol,
        "manifest": {"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs, "runs": len(keys)},
        "phase_aimed": _count(a.target for a in attempts),
        "phase_hits": _count(k.phase for k in kills),
        "kills": len(kills),
        "kills_survived": survived,
        "attempts_with_two_workers": sum(1 for a in attempts if a.mode != "single"),
        "attempts_without_kill": sum(1 for a in attempts if not a.kills),
        "checkpoint_temps_left": sum(a.checkpoint_temps_left for a in attempts),
        "cache_temps_left": sum(a.cache_temps_left for a in attempts),
        "temps_left_at_end": len(temps_at_end),
        "runs_expected": comparison["runs_expected"],
        "runs_lost": len(comparison["lost"]),
        "runs_duplicated": len(comparison["duplicated"]),
        "runs_left_running": len(comparison["left_running"]),
        "metric_mismatches": len(comparison["mismatches"]),
        "comparison": comparison,
        "errors": errors,
        "checks": checks,
        "passed": all(checks.values()),
        "timing": asdict(timing),
        "reference_wall_s": round(reference_wall, 1),
        "final_wall_s": round(final.wall_s or 0.0, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "logs": str(logs) if args.dir is not None or args.keep else None,
        "attempts": [asdict(a) for a in attempts],
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    table = summarize(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if result["passed"] else 1


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return {phase: counts[phase] for phase in [*PHASES, *sorted(set(counts) - set(PHASES))] if phase in counts}


if __name__ == "__main__":
    raise SystemExit(main())
