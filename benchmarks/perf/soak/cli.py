"""``python -m benchmarks.perf.soak``: the reference run, the killed attempts, the final run, the table."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.perf.soak.kills import (
    DEFAULT_TIMEOUT_S, PHASES, TRAINING_TARGETS, Attempt, Soak, Timing, choose_target, output_tail, plan_attempts,
)
from benchmarks.perf.soak.process import Process
from benchmarks.perf.soak.site import DEFAULT_DATA, REPO_ROOT, Site, write_manifest
from benchmarks.perf.soak.stores import compare_stores, read_store, training_left
from benchmarks.perf.soak.temp_watch import scan, temp_files
from benchmarks.sample_data import write_gap_sample


DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "soak.json"

def run_uninterrupted(site: Site, name: str, timeout_s: float) -> Process:
    """``cgat-bench run`` to its end (report included), with no kill."""
    process = Process(site.command(report=True), name)
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
    ref_process = run_uninterrupted(reference, "reference", timeout_s=args.timeout)
    ref_process.write_log(logs / "reference.log")
    reference_wall = ref_process.wall_s or 0.0
    if ref_process.exit_code != 0:
        print(ref_process.output()[-4000:], file=sys.stderr)
        raise SystemExit(f"the reference run failed (exit {ref_process.exit_code})")
    timing = Timing.measure(ref_process, reference.sources_file)
    reference_runs = read_store(reference.tracking_uri, histories=True)
    keys = {r.key for r in reference_runs if r.key}
    print(f"  {len(keys)} runs in {reference_wall:.0f} s; timing {asdict(timing)}", flush=True)

    pack_dirs = [p.name for p in scan(reference.cache_dir) if p.is_dir() and p.name != "splits"]
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
    final = run_uninterrupted(soak_site, "final", timeout_s=args.timeout)
    final.write_log(logs / "final.log")
    final_errors = list(final.errors())
    if final.exit_code != 0:
        final_errors.append(f"final run: exit {final.exit_code}: {output_tail(final)}")
    comparison = compare_stores(
        reference_runs, read_store(soak_site.tracking_uri, histories=True), args.rtol
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
