"""The smoke-profile manifests and runner options of the tests that drive the manifest runner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.runner import RunnerOptions

PRETRAIN = "epochs: 2, batch_size: 32, lr: 1.0e-3, cycle_period: 2"
TRANSFER = "epochs: 2, batch_size: 16, lr: 1.0e-3, cycle_period: 2"


def write_smoke_manifest(folder: Path, experiments: str, *, pretrain: str = PRETRAIN, transfer: str = TRANSFER,
                         top: str = "", name: str = "experiments.yaml") -> Path:
    """A manifest in ``folder`` with the smoke profile (graphs cached in ``folder/cache``), the stage
    settings given and ``experiments`` (YAML list items); ``top``: more top-level lines."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        f"data: {{cache_dir: {folder / 'cache'}}}\n{top}"
        "profiles:\n  smoke:\n    model: smoke\n"
        f"    pretrain: {{{pretrain}}}\n    transfer: {{{transfer}}}\n    max_eval_size: 16\n"
        f"experiments:\n{experiments}"
    )
    return path


def smoke_options(folder: Path, data: Path, **options: Any) -> RunnerOptions:
    """Runner options of the smoke profile with the store and work dir in ``folder``."""
    settings: dict[str, Any] = {"work_dir": folder / "work", "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
                                "progress": False, "poll_s": 0.5, **options}
    return RunnerOptions(profile="smoke", data_path=data, **settings)
