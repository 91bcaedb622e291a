"""The benchmark scripts that must run where only torch is installed (a GPU machine)."""

from __future__ import annotations

import json
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
