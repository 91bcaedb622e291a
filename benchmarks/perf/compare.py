"""Training throughput of an earlier commit against the working tree, in one sitting.

    python -m benchmarks.perf.compare --before 3e0e2ee            # 3 rounds, both backends
    python -m benchmarks.perf.compare --before HEAD~3 --rounds 5 -- --threads 1 --batch-size 32

Checks the earlier commit out into a temporary git worktree and runs ``benchmarks.perf.train``
there and in the working tree by turns (before, after, before, after, ...), so that both see the
same machine and the same load; arguments after ``--`` go to both. Each side builds its own CPU
kernels into its own folder under the torch extensions folder, so neither rebuilds the other's.
Prints structures per second of every round and the ratio after / before per backend (the
median over rounds, with the range), and writes ``benchmarks/results/compare_train.json``.
Both sides run with this interpreter: the earlier commit must import with the installed packages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "compare_train.json"
BACKENDS = ("dgl", "torch")


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _extensions_dir(label: str) -> str:
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "torch_extensions")
    return base if label == "after" else str(Path(base) / f"compare-{label}")


def run_side(label: str, tree: Path, train_args: list[str], out: Path) -> dict[str, Any]:
    """One run of the training benchmark in ``tree``; its JSON result."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": _extensions_dir(label), "DGLBACKEND": "pytorch"}
    command = [sys.executable, "-m", "benchmarks.perf.train", "--out", str(out), *train_args]
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {label} side failed ({' '.join(command)} in {tree}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    summary = {}
    for backend in BACKENDS:
        key = f"{backend}_structs_per_s"
        pairs = [(r["before"][key], r["after"][key]) for r in rounds if key in r["before"] and key in r["after"]]
        if not pairs:
            continue
        ratios = [after / before for before, after in pairs]
        summary[backend] = {
            "before_median": statistics.median(b for b, _ in pairs),
            "after_median": statistics.median(a for _, a in pairs),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own_args = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(own_args)

    before_commit = _git("rev-parse", args.before)
    after_commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="cgat-compare-") as scratch:
        worktree = Path(scratch) / "before"
        _git("worktree", "add", "--detach", str(worktree), before_commit)
        shared = REPO_ROOT.parent / "shared"
        if shared.exists():  # the earlier tree's default data is ../shared beside it, as the working tree's
            (Path(scratch) / "shared").symlink_to(shared)
        try:
            for index in range(args.rounds):
                result: dict[str, dict[str, Any]] = {}
                for label, tree in (("before", worktree), ("after", REPO_ROOT)):
                    result[label] = run_side(label, tree, train_args, Path(scratch) / f"{label}-{index}.json")
                rounds.append(result)
                line = "  ".join(
                    f"{b} {result['before'][f'{b}_structs_per_s']:.1f} -> {result['after'][f'{b}_structs_per_s']:.1f}"
                    for b in BACKENDS
                    if f"{b}_structs_per_s" in result["before"] and f"{b}_structs_per_s" in result["after"]
                )
                print(f"round {index + 1}/{args.rounds}: structures/s {line}", flush=True)
        finally:
            _git("worktree", "remove", "--force", str(worktree))

    summary = summarise(rounds)
    print(f"\nbefore {before_commit[:10]}, after {after_commit[:10]}{' (with uncommitted changes)' if dirty else ''}; "
          f"train arguments: {' '.join(train_args) or 'defaults'}")
    print(f"{'backend':<8}{'before':>10}{'after':>10}{'ratio':>8}{'range':>16}")
    for backend, s in summary.items():
        print(f"{backend:<8}{s['before_median']:>10.1f}{s['after_median']:>10.1f}{s['ratio_median']:>8.2f}"
              f"{s['ratio_min']:>8.2f}-{s['ratio_max']:<7.2f}")
    report = {
        "before": before_commit, "after": after_commit, "after_has_uncommitted_changes": dirty,
        "train_arguments": train_args, "rounds": rounds, "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
