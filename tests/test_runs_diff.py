"""cgat-bench diff-runs: two reports' runs.csv compared value by value, provenance apart."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cli import main
from benchmarks.runs_diff import diff_runs, read_runs


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _runs(**changes: object) -> list[dict[str, object]]:
    rows = [
        {"run_id": "a1", "run_key": "pre-1", "experiment": "pretrain", "test_mae": 0.1 + 0.2, "epochs_run": 33.0,
         "machine": "AMD EPYC, 2 cores", "train_seconds": 5267.1},
        {"run_id": "a2", "run_key": "tr-2", "experiment": "gap_hse", "test_mae": 0.5416, "epochs_run": 20.0,
         "machine": "AMD EPYC, 2 cores", "train_seconds": 301.0},
        {"run_id": "a3", "run_key": "tr-2", "experiment": "gap_sizes", "test_mae": 0.5416, "epochs_run": 20.0,
         "machine": "AMD EPYC, 2 cores", "train_seconds": 301.0},
    ]
    rows[1].update(changes)
    return rows


def test_runs_made_elsewhere_with_the_same_numbers_are_the_same(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", _runs())
    b = _write(tmp_path / "b.csv", _runs(run_id="b2", machine="Intel Xeon, 2 cores", train_seconds=250.0))
    diff = diff_runs(read_runs(a), read_runs(b))
    assert diff.same and diff.paired == 3
    assert main(["diff-runs", str(a), str(b)]) == 0


def test_one_bit_of_a_metric_is_a_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.csv", _runs())
    b = _write(tmp_path / "b.csv", _runs(test_mae=math.nextafter(0.5416, 1.0)))
    diff = diff_runs(read_runs(a), read_runs(b))
    assert list(diff.differences["column"]) == ["test_mae"]
    assert list(diff.differences["experiment"]) == ["gap_hse"]
    assert main(["diff-runs", str(a), str(b)]) == 1
    assert "tr-2 (gap_hse) test_mae: a '0.5416', b '0.541600000000000" in capsys.readouterr().out


def test_runs_missing_on_one_side_are_named(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", _runs())
    folder = tmp_path / "report"
    folder.mkdir()
    _write(folder / "runs.csv", _runs()[:2])
    diff = diff_runs(read_runs(a), read_runs(folder))
    assert diff.only_a == ["tr-2 (gap_sizes)"] and diff.only_b == [] and not diff.same


def test_input_that_is_not_a_report_s_runs_gives_an_error_naming_the_file(tmp_path: Path) -> None:
    other = _write(tmp_path / "other.csv", [{"x": 1}])
    assert main(["diff-runs", str(other), str(other)]) == 2
    twice = _write(tmp_path / "twice.csv", _runs() + _runs()[:1])
    with pytest.raises(ValueError, match="twice.csv: run pre-1 appears twice"):
        read_runs(twice)
    with pytest.raises(FileNotFoundError, match="no runs.csv"):
        read_runs(tmp_path / "absent")


def test_a_rerun_of_part_of_a_report_is_checked_with_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A committed report over more suites than `make bench` makes: the rerun's runs must all be in it, unchanged."""
    whole = _write(tmp_path / "whole.csv", _runs())
    part = _write(tmp_path / "part.csv", _runs()[:2])
    assert main(["diff-runs", str(whole), str(part)]) == 1  # not the same runs
    assert main(["diff-runs", str(whole), str(part), "--subset"]) == 0
    assert "b's results are within a's" in capsys.readouterr().out
    changed = _write(tmp_path / "changed.csv", _runs(test_mae=0.5417)[:2])
    assert main(["diff-runs", str(whole), str(changed), "--subset"]) == 1
    assert main(["diff-runs", str(part), str(whole), "--subset"]) == 1  # b holds a run a lacks
