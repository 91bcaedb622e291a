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


def test_compare_is_a_manifest_run_by_the_runner(tmp_path: Path, capsys) -> None:
    rows = real_rows(40, "gap_hse", max_atoms=6) + tuple(
        r for r in real_rows(80, "gap_pbe", max_atoms=6) if r["gap_hse"] is None
    )[:40]
    write_jsonl(tmp_path / "multi.jsonl", rows)
    out = tmp_path / "compare"
    command = [
        "compare", "--data", str(tmp_path / "multi.jsonl"), "--source", "gap_pbe", "--target", "gap_hse",
        "--preset", "smoke", "--pretrain-epochs", "2", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
        "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(command) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("gap_pbe -> gap_hse (train 32, pretrain "):].splitlines()
    by_strategy = {line.split()[0]: line.split() for line in table[2:]}
    # the paper's three beside every baseline of a same-quantity task
    assert set(by_strategy) == {"(pretrain)", "none", "head", "full", "constant", "zero_shot",
                                "composition_linear", "source_value", "source_linear"}
    assert all(np.isfinite(float(by_strategy[s][1])) for s in by_strategy)
    assert by_strategy["head"][4].endswith("%") and by_strategy["full"][4].endswith("%")

    # the runner's own manifest, store, keys and report, beside it
    from benchmarks.manifest import load_manifest
    from benchmarks.report import collect_runs

    manifest = load_manifest(out / "experiments.yaml")
    assert manifest.profiles["compare"].pretrain.epochs == 2 and manifest.profiles["compare"].transfer.lr == 1e-3
    assert (out / "mlflow" / "reports" / "compare" / "claims.md").is_file()
    runs, _ = collect_runs(f"sqlite:///{out / 'mlflow' / 'mlflow.db'}", profile="compare")
    assert len(runs) == 9 and runs["run_key"].notna().all()
    # run again: every run is found finished by its key, nothing trains
    assert main(command) == 0
    assert "9 runs in profile 'compare': 9 finished, 0 to run" in capsys.readouterr().out

    # leakage control: no val/test material of the target, or of the other high-fidelity properties
    # the file holds, among the pre-training materials
    from cgat_dgl.data.leakage import DEFAULT_PROTECTED
    from benchmarks.datasets import TaskData

    data = TaskData.load(manifest, tmp_path / "multi.jsonl", progress=False)
    protected = [p for p in DEFAULT_PROTECTED if p in data.loaded.targets.columns]
    assert "gap_hse" in protected
    blocked: set[str] = set()
    for prop in protected:
        split = data.split(prop)
        blocked |= set(split.val) | set(split.test)
    pretrain = data.pretrain_split("gap_pbe")
    assert not set(pretrain.ids) & blocked
    assert set(pretrain.ids) == {r["id"] for r in rows} - blocked  # only those were removed


def test_compare_help_states_the_options_defaults() -> None:
    """The parser imports no torch, so its help spells out CompareOptions' defaults: they must agree."""
    from benchmarks.compare import CompareOptions

    helps = {action.dest: action.help for action in _subparser("compare")._actions}
    fields = CompareOptions.model_fields
    for dest, name in (("pretrain_epochs", "pretrain_epochs"), ("pretrain_size", "pretrain_size"),
                       ("epochs", "epochs"), ("lr", "lr"), ("preset", "preset"), ("device", "device"),
                       ("seed", "seed"), ("split_seed", "split_seed")):
        assert f"(default: {fields[name].default:g}" in helps[dest] if isinstance(fields[name].default, float) \
            else f"default: {fields[name].default}" in helps[dest], dest
    assert "default: ./cache" in helps["cache_dir"] and fields["cache_dir"].default == Path("cache")
    assert "default: runs/compare" in helps["out"] and fields["out_dir"].default == Path("runs/compare")


def _subparser(name: str):
    import argparse

    from cgat_dgl.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


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
