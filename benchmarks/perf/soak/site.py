"""The soak's inputs: the smoke manifest, a store with its folders, the cgat-bench command line."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"
PROFILE = "smoke"
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
