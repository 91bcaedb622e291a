"""Plan-time checks of a manifest against its data: a misspelt property stops --dry-run with the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.data_checks import manifest_problems
from benchmarks.manifest import load_manifest

MANIFEST = """\
data: {{cache_dir: {cache}, protected_targets: [{protected}]}}
profiles:
  smoke:
    model: smoke
    pretrain: {{epochs: 1, cycle_period: 1}}
    transfer: {{epochs: 1, cycle_period: 1}}
experiments:
  - name: gap
    source: gap_pbe
    target: {target}
"""


def write(tmp_path: Path, target: str, protected: str = "") -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(MANIFEST.format(cache=tmp_path / "cache", target=target, protected=protected))
    return path


def test_problems_name_the_line_and_the_available_properties(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "gap_hsee", protected="e_form_expt, e_form_r2scn"))
    counts = {"gap_pbe": 300, "gap_hse": 40, "e_form_expt": 5}
    problems = manifest_problems(manifest, counts)
    assert len(problems) == 2  # a protected target needs no minimum: it is only excluded
    assert f"{tmp_path / 'experiments.yaml'}:10: experiments.0.target: 'gap_hsee' is not a property" in problems[0]
    assert "available: e_form_expt (5), gap_hse (40), gap_pbe (300)" in problems[0]
    assert "data.protected_targets.1: 'e_form_r2scn'" in problems[-1]
    small = manifest_problems(load_manifest(write(tmp_path, "gap_hse")), {"gap_pbe": 300, "gap_hse": 9})
    assert len(small) == 1 and "'gap_hse' has 9 materials" in small[0]
    assert manifest_problems(load_manifest(write(tmp_path, "gap_hse")), {"gap_pbe": 300, "gap_hse": 40}) == []


def test_dry_run_stops_on_a_misspelt_property(tmp_path: Path, shared_sample_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "gap_hsee")
    code = main(["run", str(path), "--profile", "smoke", "--data", str(shared_sample_path), "--dry-run",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "experiments.yaml:10: experiments.0.target: 'gap_hsee' is not a property of the data" in err
    assert "Traceback" not in err and not (tmp_path / "cache").exists()  # stopped before any graph build
