"""The soak benchmark (benchmarks/perf/soak/): its store comparison flags what it must, where a
kill landed is read from the output, and a short soak (two kills) of a tiny manifest passes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.perf.soak import (
    KEY_METRICS,
    PHASES,
    RunRecord,
    TempWatch,
    compare_stores,
    landed_phase,
    main,
    marker_of,
    plan_attempts,
    temp_files,
)
from cgat_dgl.atomic import atomic_write

METRICS = {"test_mae": 0.5, "best_val_mae": 0.4, "best_epoch": 1.0, "test_rmse": 0.7, "val_mae": 0.45}


def finished(key: str, run_id: str, kind: str = "transfer", **changed: float) -> RunRecord:
    return RunRecord(run_id, "FINISHED", key, kind, {**METRICS, **changed})


def reference_store() -> list[RunRecord]:
    return [
        finished("pre-1", "r0", "pretrain"),
        finished("tr-a", "r1"),
        finished("tr-b", "r2"),
        finished("tr-c", "r3"),
        RunRecord("p0", "FINISHED", None, "parent", {}),
        RunRecord("rep0", "FINISHED", None, "report", {"claims_supported": 1.0}),
    ]


def test_compare_passes_an_equal_store() -> None:
    soak = [RunRecord(f"s-{r.run_id}", r.status, r.key, r.kind, dict(r.metrics)) for r in reference_store()]
    # a run killed and resumed leaves its earlier KILLED/FAILED twin only if it was a new run: not here
    result = compare_stores(reference_store(), soak)
    assert result["runs_expected"] == result["runs_finished"] == 4
    assert result["lost"] == [] and result["duplicated"] == {} and result["left_running"] == []
    assert result["mismatches"] == []
    assert result["metrics_compared"] == 4 * len(METRICS)
    assert result["reference_problems"] == []


def test_compare_flags_lost_duplicated_running_and_mismatched_runs() -> None:
    soak = [
        finished("pre-1", "s0", "pretrain"),
        finished("tr-a", "s1"),
        finished("tr-a", "s1-again"),  # duplicated
        RunRecord("s2", "RUNNING", "tr-b", "transfer", {"val_mae": 0.5}),  # never finished: lost, and RUNNING
        finished("tr-c", "s3", test_mae=0.5000001),  # a metric off
        RunRecord("rep-killed", "RUNNING", None, "report", {}),  # a report run killed before it ended
    ]
    result = compare_stores(reference_store(), soak)
    assert result["lost"] == ["tr-b"]
    assert result["duplicated"] == {"tr-a": 2}
    assert {(r["run_id"], r["kind"], r["key"]) for r in result["left_running"]} == {
        ("s2", "transfer", "tr-b"), ("rep-killed", "report", None),
    }
    assert result["mismatches"] == [
        {"key": "tr-c", "kind": "transfer", "metric": "test_mae", "reference": 0.5, "soak": 0.5000001}
    ]
    assert result["keys_with_several_runs"] == {"tr-a": 2}
    # within a tolerance the metric passes; exact comparison (rtol 0) is the default
    assert compare_stores(reference_store(), soak, rtol=1e-5)["mismatches"] == []


def test_compare_flags_a_missing_metric_and_a_bad_reference() -> None:
    metrics = {k: v for k, v in METRICS.items() if k != "test_rmse"}
    soak = [RunRecord(f"s-{r.run_id}", r.status, r.key, r.kind, dict(r.metrics)) for r in reference_store()]
    soak[1] = RunRecord("s-r1", "FINISHED", "tr-a", "transfer", metrics)
    result = compare_stores(reference_store(), soak)
    assert result["mismatches"] == [
        {"key": "tr-a", "kind": "transfer", "metric": "test_rmse", "reference": 0.7, "soak": None}
    ]
    broken = reference_store() + [RunRecord("r9", "FAILED", "tr-d", "transfer", {})]
    assert compare_stores(broken, soak)["reference_problems"] == ["reference run r9 (tr-d) is FAILED"]
    assert set(KEY_METRICS) <= set(METRICS)


def test_markers_and_landed_phases() -> None:
    assert marker_of("  graphs: 200 structures built, 0 loaded") == ("graphs", 0, 0)
    assert marker_of("[run] pretrain gap_pbe  (pre-1, mlflow run x)") == ("run", 0, 0)
    assert marker_of("[resume] pretrain gap_pbe  (pre-1, mlflow run x)") == ("run", 0, 0)
    assert marker_of("epoch 2/4: train_mae 1, val_mae 1, lr 0.001, 0.2 s") == ("epoch", 2, 4)
    assert marker_of("[done] pretrain gap_pbe in 3 s") == ("done", 0, 0)
    assert marker_of("done in 5 s: 4 trained, 0 already finished, 0 failed") == ("finished", 0, 0)
    assert marker_of("report: /x/report.md") == ("report", 0, 0)
    assert marker_of("epochs of something") is None

    run, epoch, last = (1.0, "run", 0, 0), (2.0, "epoch", 1, 3), (3.0, "epoch", 3, 3)
    assert landed_phase([], 4.0, building=False, setup_s=0.2) == "startup"
    assert landed_phase([], 4.0, building=True, setup_s=0.2) == "graph_build"
    assert landed_phase([(0.5, "graphs", 0, 0)], 0.6, False, 0.2) == "run_start"
    assert landed_phase([run], 1.1, False, 0.2) == "run_start"
    assert landed_phase([run], 1.5, False, 0.2) == "training"
    assert landed_phase([run, epoch], 2.01, False, 0.2) == "epoch_end"
    assert landed_phase([run, epoch], 2.5, False, 0.2) == "training"
    assert landed_phase([run, epoch, last], 3.05, False, 0.2) == "run_end"
    assert landed_phase([run, last, (4.0, "finished", 0, 0)], 5.0, False, 0.2) == "report"
    assert landed_phase([run, last, (4.0, "finished", 0, 0), (6.0, "report", 0, 0)], 6.1, False, 0.2) == "exit"


def test_plan_runs_two_workers_every_third_attempt_and_ends_with_the_report() -> None:
    plan = plan_attempts(20)
    assert [mode for mode, _ in plan].count("single") == 20 - 6
    assert {mode for i, (mode, _) in enumerate(plan) if i % 3 == 2} == {"two_processes", "workers_2"}
    assert [target for _, target in plan][-4:] == ["report"] * 4 and plan[0][1] is None
    assert plan_attempts(2)[-1][1] == "report"


def test_temp_watch_sees_an_atomic_write_in_a_new_subfolder(tmp_path: Path) -> None:
    watch = TempWatch([tmp_path / "checkpoints"])
    try:
        (tmp_path / "checkpoints" / "notes.tmp").write_text("")  # no atomic write's name: not seen
        assert not watch.wait(0.2)
        (tmp_path / "checkpoints" / "run-1").mkdir()
        assert not watch.wait(0.2)  # the new folder is watched from now on
        with atomic_write(tmp_path / "checkpoints" / "run-1" / "last.pt") as stream:
            stream.write(b"x")
            deadline = 50
            while not watch.wait(0.1) and deadline:
                deadline -= 1
            assert watch.seen
    finally:
        watch.close()
    assert temp_files(tmp_path / "checkpoints") == set()  # the write ended: renamed onto last.pt


@pytest.mark.slow
def test_short_soak_passes(tmp_path: Path, shared_data_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Seed 3 aims the first kill at a checkpoint write and the second at the report.
    out = tmp_path / "soak.json"
    code = main([
        "--n", "2", "--seed", "3", "--dir", str(tmp_path / "soak"), "--out", str(out),
        "--source-data", str(shared_data_path), "--pretrain-epochs", "2", "--epochs", "2",
    ])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert code == 0, printed[-3000:]
    assert result["passed"] is True and all(result["checks"].values())
    assert result["n"] == 2 and len(result["attempts"]) == 2
    assert result["kills"] >= 1 and result["kills_survived"] == result["kills"]
    assert result["runs_expected"] == 7
    assert result["runs_lost"] == result["runs_duplicated"] == result["runs_left_running"] == 0
    assert result["metric_mismatches"] == 0 and result["comparison"]["metrics_compared"] > 0
    assert set(result["phase_hits"]) <= set(PHASES) and sum(result["phase_hits"].values()) == result["kills"]
    for field in ("phase_aimed", "errors", "timing", "wall_s", "reference_wall_s", "final_wall_s", "seed"):
        assert field in result, field
    assert result["attempts"][-1]["target"] == "report" and result["attempts"][-1]["report"] is True
    for name in ("kills survived", "runs lost", "runs duplicated", "runs left RUNNING", "metric mismatches", "PASS"):
        assert name in printed, name
    assert os.path.isfile(tmp_path / "soak" / "logs" / "reference.log")


def test_compare_flags_an_epoch_lost_or_logged_twice() -> None:
    epochs = [(0, 0.9), (1, 0.7), (2, 0.6)]
    reference = [RunRecord("r1", "FINISHED", "tr-a", "transfer", dict(METRICS), {"val_mae": epochs})]
    equal = [RunRecord("s1", "FINISHED", "tr-a", "transfer", dict(METRICS), {"val_mae": list(epochs)})]
    assert compare_stores(reference, equal)["mismatches"] == []
    assert compare_stores(reference, equal)["metrics_compared"] == len(METRICS) + 1
    for logged in (epochs[:1] + epochs[2:], epochs[:2] + [(1, 0.7)] + epochs[2:], epochs[:2] + [(2, 0.61)]):
        soak = [RunRecord("s1", "FINISHED", "tr-a", "transfer", dict(METRICS), {"val_mae": logged})]
        [mismatch] = compare_stores(reference, soak)["mismatches"]
        assert mismatch["metric"] == "val_mae (every epoch)" and mismatch["soak"] == logged
