"""Shipped pre-trained models: export with a card, use by a fresh store, refusal of a damaged or
mismatched one, and re-training on request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import pretrained
from benchmarks.manifest import load_manifest
from benchmarks.runner import Runner
from benchmarks.sample_data import write_gap_sample
from benchmarks.store import Store
from cgat_dgl.training.checkpoint import read_checkpoint
from smoke_manifests import smoke_options, write_smoke_manifest

EXPERIMENT = """\
  - name: gap
    source: gap_pbe
    target: gap_hse
    strategies: [full]
    train_sizes: [20]
"""
# stops on a plateau (a converged model, as shipped ones are) after 3 epochs at most
PRETRAIN = "epochs: 3, batch_size: 32, lr: 1.0e-3, schedule: plateau, lr_patience: 1, patience: 2, min_delta: 0.5"


@pytest.fixture(scope="module")
def small_data(shared_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gap_sample(shared_data_path, tmp_path_factory.mktemp("pretrained_data") / "small.jsonl.gz")


def make_runner(folder: Path, data: Path, models: Path, use_shipped: bool = True, pretrain_only: bool = False) -> Runner:
    top = f"pretrain_targets: {{gap_pbe: 0.4}}\npretrained_models: {models}\n"
    manifest = write_smoke_manifest(folder, EXPERIMENT, pretrain=PRETRAIN, top=top)
    return Runner(load_manifest(manifest), smoke_options(folder, data, use_shipped=use_shipped, pretrain_only=pretrain_only))


@pytest.fixture(scope="module")
def exported(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pretrained.ModelCard, Runner]:
    """A pre-training run by the runner alone, exported as a shipped model."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("exporting")
    models = base / "models"
    runner = make_runner(base / "origin", small_data, models, pretrain_only=True)
    outcome = runner.run()
    assert not outcome.failed and len(outcome.done) == 1 and runner.transfers == []
    spec = runner.pretrains[0]
    state = runner.store.runs_by_key()[spec.key]
    card = pretrained.export_model(spec, runner.store.run(state.run_id), runner.options.work_dir, runner.task_data,
                                   models, target_mae=0.4)
    pretrained.write_index(models)
    return models, card, runner


def test_export_writes_checkpoint_card_and_pages(exported) -> None:
    models, card, runner = exported
    folder = models / card.name
    assert card.name == "smoke-gap_pbe"
    assert {p.name for p in folder.iterdir()} == {"model.pt", "card.json", "README.md", "learning_curve.png"}
    on_disk = json.loads((folder / "card.json").read_text())
    for field in ("property", "preset", "test_mae", "val_mae", "best_epoch", "epochs_run", "stop_reason", "n_train",
                  "data_fingerprint", "protected_ids_hash", "train_seconds", "machine", "commit", "command"):
        assert field in on_disk, field
    assert on_disk["property"] == "gap_pbe" and on_disk["stop_reason"] in ("plateau", "cap")
    assert on_disk["epochs_run"] == len(on_disk["history"]) <= 3
    assert on_disk["sha256"] == pretrained.file_sha256(folder / "model.pt")
    state = read_checkpoint(folder / "model.pt")
    assert len(state["history"]) == on_disk["epochs_run"]  # the whole run's curve, not only up to the best
    assert card.n_train == len(runner.task_data.pretrain_sets("gap_pbe", 1.0, None, None)[0])
    assert card.name in (models / "README.md").read_text()


def test_a_fresh_store_uses_the_shipped_model_for_transfers(exported, small_data: Path, tmp_path: Path) -> None:
    models, card, exporter = exported
    runner = make_runner(tmp_path, small_data, models)
    outcome = runner.run()
    assert not outcome.failed and len(outcome.done) == 2  # the installed pre-training and the transfer
    spec = runner.pretrains[0]
    run = runner.store.run(runner.store.runs_by_key()[spec.key].run_id)
    assert run.data.tags[pretrained.SHIPPED_TAG] == card.name
    # the same results as the run that trained it, so that a report's runs.csv does not depend on which
    trained = exporter.store.run(exporter.store.runs_by_key()[spec.key].run_id)
    for name in ("test_mae", "test_rmse", "test_r2", "best_val_mae", "best_epoch", "epochs_run", "trained_structures",
                 "total_trained_structures"):
        assert run.data.metrics[name] == trained.data.metrics[name], name
    assert run.data.tags["cgat.stop_reason"] == card.stop_reason
    transfer = runner.store.run(runner.store.runs_by_key()[runner.transfers[0].key].run_id)
    assert transfer.data.tags["cgat.pretrain_run_id"] == run.info.run_id  # this store's run, not the exporter's
    installed = runner.options.work_dir / "checkpoints" / spec.key / "best.pt"
    assert read_checkpoint(installed)["model_state"].keys() == read_checkpoint(models / card.name / "model.pt")["model_state"].keys()
    history = Store(runner.options.tracking_uri, runner.options.work_dir).client.get_metric_history(run.info.run_id, "val_mae")
    assert len(history) == card.epochs_run


def test_a_damaged_or_mismatched_model_is_not_used(exported, small_data: Path, tmp_path: Path, capsys) -> None:
    models, card, _ = exported
    damaged = tmp_path / "models"
    shutil.copytree(models, damaged)
    with open(damaged / card.name / "model.pt", "r+b") as handle:
        handle.seek(2000)
        handle.write(b"\0\1\2\3")
    runner = make_runner(tmp_path / "a", small_data, damaged, pretrain_only=True)
    spec = runner.pretrains[0]
    assert pretrained.find_shipped(spec, damaged, runner.task_data) is None
    assert "SHA-256 differs" in capsys.readouterr().out
    shutil.copyfile(models / card.name / "model.pt", damaged / card.name / "model.pt")
    assert pretrained.find_shipped(spec, damaged, runner.task_data) is not None
    card_path = damaged / card.name / "card.json"
    values = json.loads(card_path.read_text())
    lacking = {k: v for k, v in values["train_settings"].items() if k != "lr_decay"}  # as if added since, at its default
    card_path.write_text(json.dumps({**values, "train_settings": lacking}))
    assert pretrained.find_shipped(spec, damaged, runner.task_data) is not None
    card_path.write_text(json.dumps({**values, "protected_ids_hash": "0" * 16}))
    assert pretrained.find_shipped(spec, damaged, runner.task_data) is None
    assert "protected" in capsys.readouterr().out
    card_path.write_text(json.dumps({**values, "train_settings": {**values["train_settings"], "lr": 0.5}}))  # other settings
    assert pretrained.find_shipped(spec, damaged, runner.task_data) is None
    card_path.write_text("{not json")
    with pytest.raises(ValueError, match="card.json"):
        pretrained.find_shipped(spec, damaged, runner.task_data)


def test_retrain_flag_trains_despite_a_matching_model(exported, small_data: Path, tmp_path: Path) -> None:
    models, card, _ = exported
    runner = make_runner(tmp_path, small_data, models, use_shipped=False, pretrain_only=True)
    assert not runner.run().failed
    spec = runner.pretrains[0]
    run = runner.store.run(runner.store.runs_by_key()[spec.key].run_id)
    assert pretrained.SHIPPED_TAG not in run.data.tags
    assert (runner.options.work_dir / "checkpoints" / spec.key / "last.pt").is_file()


def test_the_export_command_reads_the_checkpoints_of_the_work_dir_the_runs_used(
    exported, small_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.cli import main

    _, card, runner = exported
    origin = runner.options.work_dir.parent  # runs/ beside its manifest is not where they trained
    out = tmp_path / "models"
    assert main(["pretrained", str(origin / "experiments.yaml"), "--data", str(small_data),
                 "--tracking-uri", runner.options.tracking_uri, "--work-dir", str(runner.options.work_dir),
                 "--out", str(out), "--export"]) == 0
    assert "exported" in capsys.readouterr().out
    on_disk = json.loads((out / card.name / "card.json").read_text())
    assert on_disk["run_key"] == card.run_key and on_disk["identity"]["numerics"]
    assert "| yes |" in (out / "README.md").read_text()  # the index says the card holds its numerics


def test_replication_models_get_their_own_folders() -> None:
    from benchmarks.plan import PretrainRun

    def name(**identity) -> str:
        return pretrained.model_name(PretrainRun(profile="cpu", prop="gap_pbe", model={}, stage={}, **identity))

    names = [name(size=1.0, seed=0), name(size=1.0, seed=1), name(size=1.0, seed=0, split_seed=1),
             name(size=0.1, seed=0), name(size=0.1, seed=2, split_seed=1)]
    assert names == ["cpu-gap_pbe", "cpu-gap_pbe-seed1", "cpu-gap_pbe-split1", "cpu-gap_pbe-pool10",
                     "cpu-gap_pbe-pool10-seed2-split1"]
    spec = PretrainRun(profile="cpu", prop="gap_pbe", model={}, stage={}, size=0.1, seed=2, split_seed=1)
    assert pretrained.recreate_command(spec).endswith("--retrain-pretrained --pretrain-seed 2 --split-seed 1")
    seed0 = PretrainRun(profile="cpu", prop="gap_pbe", model={}, stage={}, size=1.0, seed=0)
    assert "seed" not in pretrained.recreate_command(seed0)


def test_the_listing_plans_a_replication_with_its_own_key(
    exported, small_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cgat-bench pretrained --pretrain-seed 1` lists (and would export) the replication's pre-training,
    which the shipped seed-0 model does not serve."""
    from benchmarks.cli import main

    models, card, runner = exported
    command = ["pretrained", str(runner.options.work_dir.parent / "experiments.yaml"), "--data", str(small_data),
               "--tracking-uri", runner.options.tracking_uri, "--work-dir", str(runner.options.work_dir),
               "--out", str(models)]
    assert main(command) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert card.run_key in line and f"shipped: {card.name}" in line
    assert main([*command, "--pretrain-seed", "1"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("NEW") and "seed=1" in line and card.run_key not in line and "shipped: none" in line
