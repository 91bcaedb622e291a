"""The ``cgat`` command on a tiny JSON Lines file of real rows: train, predict from CIF files, compare."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from cgat_dgl.cli import main
from cgat_dgl.data.dataset import load_dataset
from cgat_dgl.training.checkpoint import read_checkpoint
from cgat_dgl.training.inference import load_checkpoint, predict
from tests.training_fixtures import real_rows, single_thread, tracking_store, write_jsonl  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    write_jsonl(folder / "tiny.jsonl", real_rows(30, "e_form_pbe"))
    return folder


@pytest.fixture(scope="module")
def trained(workspace: Path) -> Path:
    out = workspace / "run"
    code = main([
        "train", "--data", str(workspace / "tiny.jsonl"), "--property", "e_form_pbe", "--preset", "smoke",
        "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--device", "cpu", "--no-cache",
        "--out", str(out), "--tracking-uri", tracking_store(),
    ])  # fmt: skip
    assert code == 0
    return out


def test_train_writes_checkpoint_split_and_tracking(trained: Path, workspace: Path, capsys) -> None:
    state = read_checkpoint(trained / "best.pt")
    assert state["metadata"]["property"] == "e_form_pbe"
    assert state["metadata"]["graph_params"]["max_nbr"] == 24
    assert (trained / "split.json").is_file()
    assert len(state["history"]) >= 1
    client = MlflowClient(tracking_uri=tracking_store())
    runs = client.search_runs([client.get_experiment_by_name("cgat").experiment_id], "tags.`mlflow.runName` = 'e_form_pbe none'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["data.property"] == "e_form_pbe"
    assert runs[0].data.params["data.train_size"] == "24"  # 80 % of 30


def test_predict_cif_files_matches_the_dataset_predictions(trained: Path, workspace: Path, capsys) -> None:
    rows = real_rows(30, "e_form_pbe")[:4]
    cif_dir = workspace / "cifs"
    cif_dir.mkdir()
    for row in rows:
        (cif_dir / f"{row['id']}.cif").write_text(row["cif"])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained / "best.pt"), str(cif_dir), "--device", "cpu"]) == 0
    printed = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert printed[0] == ["id", "e_form_pbe [eV/atom]"]
    predicted = {row[0]: float(row[1]) for row in printed[1:]}
    assert sorted(predicted) == sorted(r["id"] for r in rows)

    loaded = load_dataset(workspace / "tiny.jsonl", ["e_form_pbe"], cache_dir=None, progress=False)
    dataset = loaded.dataset("e_form_pbe", [r["id"] for r in rows])
    model, normalizer, _ = load_checkpoint(trained / "best.pt")
    expected = predict(model, normalizer, dataset)
    np.testing.assert_allclose([predicted[i] for i in dataset.ids], expected, rtol=1e-4, atol=1e-5)

    out_csv = workspace / "preds.csv"
    files = [str(cif_dir / f"{rows[0]['id']}.cif")]
    assert main(["predict", "--checkpoint", str(trained / "best.pt"), *files, "--out", str(out_csv), "--device", "cpu"]) == 0
    assert out_csv.read_text().splitlines()[1].startswith(f"{rows[0]['id']},")


def test_predict_names_a_bad_file_and_fails(trained: Path, workspace: Path, capsys) -> None:
    good = workspace / "good.cif"
    good.write_text(real_rows(30, "e_form_pbe")[0]["cif"])
    bad = workspace / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a oops\n")
    code = main(["predict", "--checkpoint", str(trained / "best.pt"), str(good), str(bad), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.cif" in captured.err
    assert captured.out.splitlines()[1].startswith("good,")  # the readable file is still predicted


def test_missing_checkpoint_is_a_clear_error(workspace: Path, capsys) -> None:
    assert main(["predict", "--checkpoint", str(workspace / "none.pt"), str(workspace)]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_train_transfer_from_checkpoint_with_head_strategy(trained: Path, workspace: Path, capsys) -> None:
    capsys.readouterr()
    code = main([
        "train", "--data", str(workspace / "tiny.jsonl"), "--property", "e_form_pbe", "--epochs", "1",
        "--batch-size", "8", "--device", "cpu", "--no-cache", "--init-checkpoint", str(trained / "best.pt"),
        "--strategy", "head", "--normalization", "refit", "--split", str(trained / "split.json"),
        "--out", str(workspace / "head"), "--tracking-uri", tracking_store(),
    ])  # fmt: skip
    assert code == 0
    state = read_checkpoint(workspace / "head" / "best.pt")
    assert state["frozen_groups"] == ["embedding", "message_passing", "roost", "pooling"]
    # the paper's 4 cycles over a transfer run's epochs (70 of 280); a 1-epoch run gets the shortest, 2
    assert state["train_config"]["strategy"] == "head" and state["train_config"]["cycle_period"] == 2
    assert "frozen" in capsys.readouterr().out


def test_compare_prints_a_table_for_every_strategy(tmp_path: Path, capsys) -> None:
    rows = real_rows(40, "gap_hse", max_atoms=6) + tuple(
        r for r in real_rows(80, "gap_pbe", max_atoms=6) if r["gap_hse"] is None
    )[:40]
    write_jsonl(tmp_path / "multi.jsonl", rows)
    capsys.readouterr()
    code = main([
        "compare", "--data", str(tmp_path / "multi.jsonl"), "--source", "gap_pbe", "--target", "gap_hse",
        "--preset", "smoke", "--pretrain-epochs", "2", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
        "--device", "cpu", "--no-cache", "--out", str(tmp_path / "compare"),
        "--tracking-uri", tracking_store(),
    ])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("gap_pbe -> gap_hse (train 32, val 4, test 4, pretrain ")
    by_strategy = {line.split()[0]: line.split() for line in table[2:]}
    assert set(by_strategy) == {"(pretrain)", "none", "head", "full"}
    assert all(np.isfinite(float(by_strategy[s][1])) for s in ("none", "head", "full"))
    assert by_strategy["head"][4].endswith("%") and by_strategy["full"][4].endswith("%")
    # leakage control: no val/test material of the target, or of the other high-fidelity properties
    # the file holds, among the pre-training materials
    splits = tmp_path / "compare" / "splits"
    from cgat_dgl.data.leakage import DEFAULT_PROTECTED, pretrain_split_path
    from cgat_dgl.data.splits import read_split

    protected = [p for p in DEFAULT_PROTECTED if (splits / f"{p}-seed0.json").is_file()]
    assert "gap_hse" in protected and any(r["e_form_r2scan"] is not None for r in rows) == ("e_form_r2scan" in protected)
    blocked: set[str] = set()
    for prop in protected:
        split, _ = read_split(splits / f"{prop}-seed0.json")
        blocked |= set(split.val) | set(split.test)
    pretrain, _ = read_split(pretrain_split_path(splits, "gap_pbe", protected, 0))
    assert not set(pretrain.ids) & blocked
    assert set(pretrain.ids) == {r["id"] for r in rows} - blocked  # only those were removed


def test_train_takes_the_anneal_and_the_epoch_length(workspace: Path) -> None:
    out = workspace / "held"
    assert main([
        "train", "--data", str(workspace / "tiny.jsonl"), "--property", "e_form_pbe", "--preset", "smoke",
        "--epochs", "3", "--schedule", "cosine", "--anneal-epochs", "2", "--epoch-structures", "50",
        "--batch-size", "8", "--device", "cpu", "--no-cache", "--out", str(out), "--tracking-uri", tracking_store(),
    ]) == 0  # fmt: skip
    state = read_checkpoint(out / "last.pt")
    assert (state["train_config"]["anneal_epochs"], state["train_config"]["epoch_structures"]) == (2, 50)
    # 24 training materials, 3 passes an epoch; epoch 3 holds the floor rate the anneal reached
    assert [row["structures"] for row in state["history"]] == [72, 72, 72]
    assert state["history"][2]["lr"] == pytest.approx(1.25e-4 * 0.01)


def test_the_learning_rate_cycle_follows_the_run_s_epochs(trained: Path) -> None:
    state = read_checkpoint(trained / "last.pt")
    # a 2-epoch run is one rise and fall, not the first 2 epochs of a 130-epoch cycle
    assert state["train_config"]["cycle_period"] == 2
    assert [row["lr"] for row in state["history"]] == pytest.approx([1e-3 * 0.1, 1e-3])


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--cycle-period", "--train-size"])
def test_non_positive_counts_are_refused(workspace: Path, flag: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--data", str(workspace / "tiny.jsonl"), "--property", "e_form_pbe", "--out",
              str(workspace / "never"), flag, "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    assert not (workspace / "never").exists()


def test_bench_commands_take_the_manifest_s_only_profile_or_ask(tmp_path: Path, capsys) -> None:
    from benchmarks.cli import main as bench

    repo = Path(__file__).resolve().parents[1]
    assert bench(["run", str(repo / "experiments.yaml"), "--dry-run"]) == 2
    assert "choose one with --profile" in capsys.readouterr().err
    assert bench(["run", str(repo / "experiments.yaml"), "--profile", "smok", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "error: no profile 'smok'; known:" in err and '"' not in err  # the message as written, unquoted
    single = tmp_path / "experiments.yaml"
    single.write_text(
        "profiles:\n  smoke:\n    model: smoke\n    pretrain: {epochs: 1}\n    transfer: {epochs: 1}\n"
        "experiments:\n  - {name: gap, source: gap_pbe, target: gap_hse}\n"
    )
    from benchmarks.manifest import load_manifest

    assert load_manifest(single).profile_name(None) == "smoke"


def test_the_report_keeps_the_trials_of_the_manifest_studies_only(capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    from benchmarks.cli import ReportSources, _current_studies

    studies = pd.DataFrame({"study": ["volume_to_e_form_lr_wd-none", "volume_to_e_form_lr_wd-full", "volume_to_e_form_grid",
                                      "gap_hse_search"], "run_id": ["a", "b", "c", "d"]})  # fmt: skip
    manifest = Path(__file__).resolve().parents[1] / "experiments.yaml"
    kept = _current_studies(studies, ReportSources(tracking_uri="sqlite://", manifest=manifest))
    assert list(kept["run_id"]) == ["a", "b", "d"]
    assert "left out the trials of 1 studies the manifest no longer holds: volume_to_e_form_grid" in capsys.readouterr().out
