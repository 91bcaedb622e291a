"""What each part of the fast path buys: training steps of the cpu preset, one thread, as the plain DGL
definition, as the fast implementation on torch operations, with each kernel group alone, with all of
them, with all but one, and on the torch backend.

    python -m benchmarks.perf.kernel_groups [--rounds 3] [--steps 15]

Each configuration runs ``benchmarks.perf.train`` in its own process (``CGAT_CPU_KERNELS`` names the
kernel groups, ``cgat_dgl.kernels.GROUPS``), all of them in turn for each round, so that they share
the machine's load; the table gives structures per CPU-second (median over rounds) and the ratio to
the fast implementation on torch operations. Writes ``benchmarks/results/kernel_groups.json``.
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

from cgat_dgl.kernels import GROUPS

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "kernel_groups.json"
BASELINE = "fast, torch operations"


def configurations() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Name: (train arguments, environment)."""
    found: dict[str, tuple[list[str], dict[str, str]]] = {
        "plain (DGL message passing)": (["--backend", "dgl", "--implementation", "plain"], {"CGAT_CPU_KERNELS": "0"}),
        BASELINE: (["--backend", "dgl"], {"CGAT_CPU_KERNELS": "0"}),
    }
    for group in GROUPS:
        found[f"fast + {group} only"] = (["--backend", "dgl"], {"CGAT_CPU_KERNELS": group})
    found["fast + all kernels"] = (["--backend", "dgl"], {"CGAT_CPU_KERNELS": "1"})
    # Leaving one group out shows what it buys in the configuration that runs (the groups interact:
    # a kernel's output layout can save the next one a copy).
    for group in GROUPS:
        rest = ",".join(other for other in GROUPS if other != group)
        found[f"fast + all but {group}"] = (["--backend", "dgl"], {"CGAT_CPU_KERNELS": rest})
    found["fast + all kernels, torch backend"] = (["--backend", "torch"], {"CGAT_CPU_KERNELS": "1"})
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {name: [] for name in configurations()}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for name, (train_args, env) in configurations().items():
                out = Path(folder) / "train.json"
                command = [sys.executable, "-m", "benchmarks.perf.train", "--threads", "1", "--steps", str(args.steps),
                           "--out", str(out), *train_args]
                subprocess.run(command, env={**os.environ, **env}, cwd=REPO_ROOT, check=True, capture_output=True)
                result = json.loads(out.read_text())
                backend = train_args[train_args.index("--backend") + 1]
                rates[name].append(result[f"{backend}_structs_per_cpu_s"])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians[BASELINE]
    print(f"{'configuration':<40}{'struct/cpu-s':>14}{'vs torch ops':>14}  (cpu preset, 1 thread, median of {args.rounds})")
    for name, value in medians.items():
        print(f"{name:<40}{value:>14.1f}{value / base:>14.2f}")
    summary = {"rounds": args.rounds, "steps": args.steps, "structs_per_cpu_s": rates, "median": medians,
               "ratio_to_torch_ops": {name: value / base for name, value in medians.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
