"""The benchmark scripts: the GPU one must run where only torch is installed; the comparison of two
commits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Importing any of these fails in the child process, as on a machine without them.
WITHOUT = ("dgl", "pymatgen", "matminer")


def test_gpu_benchmark_runs_without_dgl_pymatgen_or_matminer(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    code = (
        "import sys\n"
        f"for name in {WITHOUT!r}: sys.modules[name] = None\n"
        "from benchmarks.perf.gpu import main\n"
        f"main(['--device', 'cpu', '--preset', 'smoke', '--variants', 'fp32,bf16', '--batch-size', '8',"
        f" '--batches', '2', '--warmup', '1', '--steps', '3', '--out', {str(out)!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["real_element_table"] is False
    assert [run["variant"] for run in result["runs"]] == ["fp32", "bf16"]
    for run in result["runs"]:
        assert "error" not in run, run
        assert run["steps"] == 3 and run["structs_per_s"] > 0
        assert run["epoch_hours_1p8m"] > 0
    assert "epoch h (1.8M)" in done.stdout


def test_compare_runs_an_earlier_commit_and_the_working_tree_by_turns(tmp_path: Path, shared_data_path: Path) -> None:
    out = tmp_path / "compare.json"
    # No --data: each side reads its default, ../shared beside its tree (or $CGAT_SHARED_DATA).
    train = ["--preset", "smoke", "--backend", "torch", "--structures", "16", "--batch-size", "8", "--steps", "2",
             "--warmup", "1"]  # fmt: skip
    command = [sys.executable, "-m", "benchmarks.perf.compare", "--before", "HEAD", "--rounds", "2", "--out", str(out),
               "--", *train]  # fmt: skip
    env = {**os.environ, "CGAT_CPU_KERNELS": "0"}  # no kernel build for the worktree's side
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert len(result["rounds"]) == 2 and result["train_arguments"] == train
    for sides in result["rounds"]:
        assert sides["before"]["torch_structs_per_s"] > 0 and sides["after"]["torch_structs_per_s"] > 0
    summary = result["summary"]["torch"]
    assert summary["ratio_min"] <= summary["ratio_median"] <= summary["ratio_max"]
    assert "torch" in done.stdout and "ratio" in done.stdout
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert "cgat-compare-" not in worktrees  # removed again
