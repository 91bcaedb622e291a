"""Where the kills are aimed and where they land: timing from the reference run, the attempts."""

from __future__ import annotations

import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from benchmarks.perf.soak.process import Process
from benchmarks.perf.soak.site import Site
from benchmarks.perf.soak.temp_watch import TempWatch, temp_files


PHASES = (
    "startup", "graph_build", "run_start", "training", "checkpoint_write", "epoch_end", "run_end", "report", "exit",
)
TRAINING_TARGETS = ("graph_build", "startup", "run_start", "training", "checkpoint_write", "epoch_end", "run_end")
IDLE_TARGETS = ("startup", "graph_build", "report")  # what is left to hit once every run is finished
NO_EPOCH_LINES = ("epoch_end", "run_end")  # --workers 2: pool workers print no epoch lines
EPOCH_LOG_S = 0.05  # after an epoch line: the epoch's metrics go to MLflow
DEFAULT_TIMEOUT_S = 1800.0  # one cgat-bench process; a loaded machine slows them many times

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
            timing.epoch_s = median(gaps)
        firsts = [next((t for t, e, _ in epochs if t > start and e == 1), None) for start in times["run"]]
        setups = [first - start - timing.epoch_s for first, start in zip(firsts, times["run"]) if first is not None]
        if setups:
            timing.setup_s = max(0.05, median(setups))
        lasts = [t for t, e, n in epochs if e == n]
        finals = [next((d - t for d in times["done"] if d >= t), None) for t in lasts]
        if any(f is not None for f in finals):
            timing.final_s = max(0.05, median([f for f in finals if f is not None]))
        if times["finished"] and process.lines:
            timing.report_s = max(0.5, process.lines[-1][0] - times["finished"][0])
        reports = [t for t, n, _, _ in events if n == "report"]
        if reports and sources is not None and sources.exists():
            written = sources.stat().st_mtime - process.started_wall
            timing.report_log_s = max(0.05, reports[0] - written)
        return timing


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
            return median(self.observed_to_graphs)
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
        packs = self.site.cache_dir / self.pack_dir if self.pack_dir else self.site.cache_dir  # not the splits
        before_ckpt, before_cache = temp_files(checkpoints), temp_files(packs)
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
                # once: the process fired by may have exited on its own, leaving killed_at unset
                if fired_at is not None and now >= fired_at + delay and second_kill is None and fired_by.killed_at is None:
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
                    record.errors.append(f"attempt {index} process {process.name}: exit {code}: {output_tail(process)}")
            record.errors += [f"attempt {index} process {process.name}: {line}" for line in process.errors()]
            if not cache_deleted and mode == "single":
                self.observed_to_graphs += [t for t, name, _, _ in process.events if name == "graphs"][:1]
            if self.log_dir is not None:
                process.write_log(self.log_dir / f"attempt-{index:03d}-{process.name}.log")
        record.checkpoint_temps_left = len(temp_files(checkpoints) - before_ckpt)
        record.cache_temps_left = len(temp_files(packs) - before_cache)
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
                built = any(name == "graphs" for _, name, _, _ in process.events)  # too late to aim at
                if not built and process.building_graphs():
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


def output_tail(process: Process, lines: int = 8) -> str:
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
