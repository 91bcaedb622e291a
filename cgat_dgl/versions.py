"""The versions of this code and of the packages it runs on, recorded with every tracked run, so that
a result can be traced to what produced it."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from cgat_dgl import __version__

PACKAGES = ("torch", "dgl", "numpy", "scipy", "pymatgen", "matminer", "mlflow", "optuna", "pandas")


def _git_commit(folder: Path) -> str | None:
    """HEAD of the checkout holding ``folder``, with "-dirty" when files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder, capture_output=True, text=True, timeout=5, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if status.strip() else "") if commit else None


@lru_cache(maxsize=1)
def software_versions() -> dict[str, str]:
    """{name: version} for this package (and its git commit when run from a checkout), Python and
    the main dependencies ("absent" for one not installed)."""
    versions = {"cgat_dgl": __version__, "python": platform.python_version()}
    commit = _git_commit(Path(__file__).resolve().parent)
    if commit:
        versions["cgat_dgl_commit"] = commit
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


@lru_cache(maxsize=1)
def machine_label() -> str:
    """The machine a run trained on: CPU model, core count, and the GPU when torch sees one."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    label = f"{model}, {os.cpu_count() or '?'} cores"
    try:
        import torch

        if torch.cuda.is_available():
            label += f", {torch.cuda.get_device_name(0)}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return label


def version_tags() -> dict[str, str]:
    """The versions as MLflow tags: ``cgat.version.<name>``."""
    return {f"cgat.version.{name}": value for name, value in software_versions().items()}


def software_label(tags: dict[str, str]) -> str:
    """A short text naming the code and main packages a run's ``version_tags`` record, or
    "unrecorded" for a run from before they were recorded."""
    code = tags.get("cgat.version.cgat_dgl")
    if code is None:
        return "unrecorded"
    commit = tags.get("cgat.version.cgat_dgl_commit")
    label = f"cgat_dgl {code}"
    if commit:
        label += f" ({commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})"
    packages = ", ".join(f"{name} {tags.get(f'cgat.version.{name}', '?')}" for name in ("torch", "dgl", "pymatgen"))
    return f"{label}, {packages}"


def results_label(tags: dict[str, str]) -> str:
    """The versions that decide whether results are comparable (those a run key holds): "cgat_dgl
    0.2.0, torch 2.2.1, dgl 2.1.0", or "unrecorded"."""
    if "cgat.version.cgat_dgl" not in tags:
        return "unrecorded"
    return ", ".join(f"{name} {tags.get(f'cgat.version.{name}', '?')}" for name in ("cgat_dgl", "torch", "dgl"))
