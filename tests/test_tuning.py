"""Optuna studies of learning rate and weight decay: counting, restarts, shared workers, retries,
pruning, MLflow runs and the study's artifacts, on a smoke model and real crystals."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from itertools import islice
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from pymatgen.core import Structure

from benchmarks.manifest import StudySpec
from benchmarks.tuning import (
    HeartbeatSettings,
    SearchSpace,
    StudyConfigError,
    TrialInputs,
    TuneOptions,
    compare_studies,
    run_study,
    strategy_specs,
    write_comparison,
)
from benchmarks.tuning.mlflow_callback import StudyTracking
from benchmarks.tuning.space import make_pruner, make_sampler
from benchmarks.tuning.study import SurplusTrial, make_objective, open_study
from cgat_dgl.graphs.build import build_crystal_graph
from cgat_dgl.graphs.crystal_graph import CrystalGraph
from cgat_dgl.graphs.neighbors import GraphParams
from cgat_dgl.model.config import ModelConfig
from cgat_dgl.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TARGET = "gap_hse"
N_ROWS = 80


def shared_data() -> Path:
    return Path(os.environ.get("CGAT_SHARED_DATA", REPO.parent / "shared" / "data" / "mp_multifidelity.jsonl.gz"))


def real_rows(count: int = N_ROWS, max_atoms: int = 12) -> list[dict]:
    """The first ``count`` small crystals of the shared file that have an HSE band gap."""
    path = shared_data()
    if not path.exists():
        pytest.fail(f"shared data not found at {path}; set CGAT_SHARED_DATA", pytrace=False)
    rows = []
    with gzip.open(path, "rt") as handle:
        for line in handle:
            row = json.loads(line)
            if row[TARGET] is not None and row["natoms"] <= max_atoms:
                rows.append(row)
                if len(rows) == count:
                    return rows
    raise AssertionError(f"{path} has fewer than {count} rows with {TARGET}")


def crystal_graph(row: dict) -> CrystalGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the CIF parser's notes on rounded coordinates
        structure = Structure.from_str(row["cif"], fmt="cif")
    return build_crystal_graph(row["id"], structure, GraphParams())


@pytest.fixture(scope="module")
def inputs() -> TrialInputs:
    """40/20/20 real crystals with their HSE gaps, a smoke model trained from scratch for 2 epochs."""
    items = [(crystal_graph(row), float(row[TARGET])) for row in real_rows()]
    return TrialInputs(
        model_config=ModelConfig.preset("smoke"),
        train_config=TrainConfig(epochs=2, batch_size=16, cycle_period=2, device="cpu", strategy="none"),
        train_set=items[:40],
        val_set=items[40:60],
        test_set=items[60:],
        metadata={"property": TARGET},
        params={"train_size": 40},
        tags={"cgat.target": TARGET},
    )


def spec(name: str, n_trials: int, **changes: object) -> StudySpec:
    values = {"name": name, "experiment": "gap", "strategy": "none", "n_trials": n_trials, "pruner": "none"}
    values.update(changes)
    return StudySpec.model_validate(values)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared two-core machine: one thread per process is the fastest.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Optuna storage and one MLflow store for the module (tests use distinct study names):
    creating MLflow's database takes seconds."""
    return tmp_path_factory.mktemp("stores")


def options(stores: Path, tmp: Path, **changes: object) -> TuneOptions:
    values: dict = {
        "storage": f"sqlite:///{stores / 'optuna.db'}",
        "tracking_uri": f"sqlite:///{stores / 'mlflow.db'}",
        "work_dir": tmp / "runs",
        "profile": "smoke",
        "heartbeat": HeartbeatSettings(interval_s=1, grace_s=3),
        "poll_s": 0.2,
    }
    values.update(changes)
    return TuneOptions(**values)


def trial_runs(tracking_uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("cgat-bench")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`cgat.study` = '{study}' and tags.`cgat.kind` = 'tuning-trial'"
    )
    return sorted(runs, key=lambda run: int(run.data.tags["cgat.trial"]))


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


# --- search space ------------------------------------------------------------------------------------
def test_search_space_from_spec() -> None:
    grid = SearchSpace.from_spec(spec("g", 6, sampler="grid", lr=[1.25e-5, 1.25e-6], weight_decay=[1e-2, 1e-3, 1e-4]))
    assert grid.is_grid and grid.grid_size == 6
    assert grid.grid == {"lr": [1.25e-5, 1.25e-6], "weight_decay": [1e-2, 1e-3, 1e-4]}
    ranged = SearchSpace.from_spec(spec("t", 3, lr=[1e-6, 1e-4]))
    assert not ranged.is_grid and (ranged.lr.low, ranged.lr.high) == (1e-6, 1e-4)
    with pytest.raises(StudyConfigError, match="study 't3'.*lr.*sampler: grid"):
        SearchSpace.from_spec(spec("t3", 3, lr=[1e-6, 1e-5, 1e-4]))
    with pytest.raises(StudyConfigError, match="weight_decay.*0 < low < high"):
        SearchSpace.from_spec(spec("t0", 3, weight_decay=[0.0, 1e-2]))
    assert isinstance(make_pruner(spec("h", 3, pruner="hyperband"), epochs=9), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(spec("m", 3, pruner="median"), epochs=9), optuna.pruners.MedianPruner)
    assert isinstance(make_sampler(spec("g", 6, sampler="grid", lr=[1e-5], weight_decay=[1e-3]),
                                   SearchSpace.from_spec(spec("g", 6, sampler="grid", lr=[1e-5], weight_decay=[1e-3]))),
                      optuna.samplers.GridSampler)
    names = [s.name for s in strategy_specs(spec("abl", 4), ["none", "head", "full"])]
    assert names == ["abl-none", "abl-head", "abl-full"]
    with pytest.raises(StudyConfigError, match="comma list"):
        strategy_specs(spec("abl", 4), ["partial"])


# --- a study, its MLflow runs and artifacts, and its restart ------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, stores: Path, inputs: TrialInputs):
    tmp = tmp_path_factory.mktemp("study")
    opts = options(stores, tmp)
    result = run_study(spec("lrwd", 3, sampler="random", seed=3), inputs, opts)
    return tmp, opts, result


def test_study_runs_trials_tracked_as_nested_runs(finished) -> None:
    tmp, opts, result = finished
    study = optuna.load_study(study_name="lrwd", storage=opts.storage)
    assert states(study) == {"COMPLETE": 3}
    client = MlflowClient(tracking_uri=opts.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["cgat.study"] == "lrwd" and parent.data.tags["cgat.parent"] == "1"
    assert parent.info.status == "FINISHED"
    runs = trial_runs(opts.tracking_uri, "lrwd")
    assert [run.data.tags["cgat.trial"] for run in runs] == ["0", "1", "2"]
    for run, trial in zip(runs, study.trials):
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        assert run.data.tags["optuna.state"] == "COMPLETE" and run.info.status == "FINISHED"
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert float(run.data.params["weight_decay"]) == pytest.approx(trial.params["weight_decay"])
        assert 1e-6 <= trial.params["lr"] <= 1e-4 and 1e-6 <= trial.params["weight_decay"] <= 1e-2
        history = client.get_metric_history(run.info.run_id, "val_mae")
        assert sorted(m.step for m in history) == [0, 1]
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert trial.value == pytest.approx(min(m.value for m in history))  # best validation MAE
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
    # The trial checkpoints were removed; the best one is an artifact of each run.
    assert not any((opts.work_dir / "tuning" / "lrwd").glob("trial-*"))


def test_study_summary_artifacts(finished) -> None:
    tmp, opts, result = finished
    study = optuna.load_study(study_name="lrwd", storage=opts.storage)
    client = MlflowClient(tracking_uri=opts.tracking_uri)
    names = {Path(a.path).name for a in client.list_artifacts(result.parent_run_id, "study")}
    assert {"best_trial.json", "trials.csv", "optimization_history.png", "contour.png", "param_importances.png"} <= names
    best = json.loads(result.files["best_trial"].read_text())
    assert best["best"]["number"] == min(study.trials, key=lambda t: t.value).number
    assert best["best"]["value"] == pytest.approx(min(t.value for t in study.trials))
    assert best["counts"]["complete"] == 3
    lines = result.files["trials"].read_text().strip().splitlines()
    assert len(lines) == 4 and "params_lr" in lines[0] and "params_weight_decay" in lines[0]
    assert result.files["contour"].read_bytes()[:4] == b"\x89PNG"
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["best_val_mae"] == pytest.approx(best["best"]["value"])
    assert float(parent.data.tags["best.lr"]) == pytest.approx(best["best"]["params"]["lr"])


def test_restart_continues_the_same_study(finished, stores: Path, inputs: TrialInputs) -> None:
    tmp, opts, result = finished
    calls: list[int] = []

    def lazy_inputs() -> TrialInputs:
        calls.append(1)
        return inputs

    # The same total again: nothing to run, the inputs (data, pre-training) are not even prepared.
    again = run_study(spec("lrwd", 3, sampler="random", seed=3), lazy_inputs, opts, epochs=2)
    assert calls == [] and again.parent_run_id == result.parent_run_id
    assert again.counts["complete"] == 3
    # A larger total continues the study to it: 4 trials in all, not 3 + 4.
    more = run_study(spec("lrwd", 3, sampler="random", seed=3), lazy_inputs, options(stores, tmp, n_trials=4), epochs=2)
    assert calls == [1] and more.counts["complete"] == 4
    assert [run.data.tags["cgat.trial"] for run in trial_runs(opts.tracking_uri, "lrwd")] == ["0", "1", "2", "3"]
    # The stored study cannot be continued with another search space.
    with pytest.raises(StudyConfigError, match="lrwd.*other settings.*sampler"):
        open_study(spec("lrwd", 3, sampler="tpe", seed=3), opts, None, epochs=2)


def test_pruned_trials_are_tagged_and_counted(tmp_path: Path, stores: Path, inputs: TrialInputs) -> None:
    opts = options(stores, tmp_path, pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # every MAE is above 0
    result = run_study(spec("pruned", 2), inputs, opts)
    study = optuna.load_study(study_name="pruned", storage=opts.storage)
    assert states(study) == {"PRUNED": 2}
    assert all(list(t.intermediate_values) == [0] for t in study.trials)  # stopped after the first epoch
    runs = trial_runs(opts.tracking_uri, "pruned")
    assert len(runs) == 2
    assert all(run.data.tags["optuna.state"] == "PRUNED" and run.info.status == "KILLED" for run in runs)
    # No complete trial: the plots that need some are replaced by notes, the study still finishes.
    assert result.best is None
    assert result.files["param_importances"].suffix == ".txt"
    assert "needs at least 2 complete trials" in result.files["param_importances"].read_text()


@pytest.mark.slow
def test_grid_study_and_comparison(finished, tmp_path: Path, stores: Path, inputs: TrialInputs) -> None:
    opts = options(stores, tmp_path, n_trials=10)
    grid = spec("paper-grid", 10, sampler="grid", lr=[1.25e-5, 1.25e-6], weight_decay=[1e-2, 1e-3], pruner="median")
    result = run_study(grid, inputs, opts)
    study = optuna.load_study(study_name="paper-grid", storage=opts.storage)
    assert result.n_trials == 4 and states(study) == {"COMPLETE": 4}  # capped at the grid size
    points = {(t.params["lr"], t.params["weight_decay"]) for t in study.trials}
    assert points == {(lr, wd) for lr in (1.25e-5, 1.25e-6) for wd in (1e-2, 1e-3)}
    frame = compare_studies(opts.storage, ["paper-grid", "lrwd"])
    assert list(frame["study"]) == ["paper-grid", "lrwd"]
    assert list(frame["sampler"]) == ["grid", "random"]
    assert frame.loc[0, "complete"] == 4 and frame.loc[1, "complete"] >= 3
    assert frame.loc[0, "best_val_mae"] == pytest.approx(study.best_value)
    assert frame.loc[0, "lr"] == study.best_params["lr"]
    assert frame.loc[0, "test_mae"] == pytest.approx(study.best_trial.user_attrs["test_mae"])
    text = write_comparison(frame, tmp_path / "comparison.md", "grid vs random").read_text()
    assert text.startswith("## grid vs random") and "| paper-grid | none | grid |" in text
    with pytest.raises(KeyError, match="no study \\['missing'\\]"):
        compare_studies(opts.storage, ["missing"])


def test_a_relative_grid_scales_the_task_default_rate(tmp_path: Path, stores: Path, inputs: TrialInputs) -> None:
    opts = options(stores, tmp_path, n_trials=2)
    grid = spec("relative-grid", 2, sampler="grid", lr=[1.0, 0.1], lr_relative=True, weight_decay=[0.0])
    run_study(grid, inputs, opts, epochs=1)
    study = optuna.load_study(study_name="relative-grid", storage=opts.storage)
    default = inputs.train_config.lr
    runs = trial_runs(opts.tracking_uri, "relative-grid")
    logged = sorted((float(r.data.params["lr_factor"]), float(r.data.params["lr"]), float(r.data.params["weight_decay"])) for r in runs)
    assert logged == [(0.1, pytest.approx(0.1 * default), 0.0), (1.0, pytest.approx(default), 0.0)]
    assert {t.params["lr"] for t in study.trials} == {1.0, 0.1}  # the grid holds the factors
    # a relative grid is another study than an absolute one of the same values
    with pytest.raises(StudyConfigError, match="lr_relative"):
        run_study(spec("relative-grid", 2, sampler="grid", lr=[1.0, 0.1], weight_decay=[0.0]), inputs, opts, epochs=1)


def test_no_transfer_gets_a_study_on_an_inter_property_task(tmp_path: Path) -> None:
    from benchmarks.manifest import load_manifest
    from benchmarks.tuning.inputs import transfer_spec

    path = tmp_path / "experiments.yaml"
    path.write_text(
        "profiles: {cpu: {model: smoke, pretrain: {epochs: 2}, transfer: {epochs: 2, lr: 1.0e-3}}}\n"
        "experiments:\n  - {name: inter, source: volume_pbe, target: e_form_r2scan, strategies: [head, full], transfer_lr_factor: 0.1, transfer_normalization: refit}\n"
        "studies:\n  - {name: grid, experiment: inter, strategy: full, n_trials: 2, sampler: grid, lr: [1.0, 0.1], lr_relative: true, weight_decay: [0.0]}\n"
    )
    manifest = load_manifest(path)
    full = transfer_spec(manifest, manifest.study("grid"), "cpu", "data")
    none = transfer_spec(manifest, manifest.study("grid").model_copy(update={"strategy": "none"}), "cpu", "data")
    assert full.pretrain is not None and full.stage["lr"] == pytest.approx(1e-4)  # the inter-property default
    assert full.stage["normalization"] == "refit"  # the trials train as the experiment's runs do
    assert none.strategy == "none" and none.pretrain is None and none.stage["lr"] == pytest.approx(1e-3)
    assert (none.target, none.train_size, none.seed) == (full.target, full.train_size, full.seed)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # trials asked by hand, as racing workers would
def test_a_trial_beyond_the_total_is_declined_untrained(tmp_path: Path, stores: Path, inputs: TrialInputs) -> None:
    opts = options(stores, tmp_path)
    race = spec("race", 2)
    study = open_study(race, opts, None, epochs=2)
    asked = [study.ask() for _ in range(3)]  # three workers asked at once for a study of two trials
    tracking = StudyTracking("race", experiment="cgat-bench", tracking_uri=opts.tracking_uri)
    objective = make_objective(race, inputs, tracking, opts, n_trials=2)
    with pytest.raises(SurplusTrial, match="already has 2 trials; trial 2 declined"):
        objective(asked[2])
    declined = study.get_trials()[2]
    assert declined.user_attrs == {"surplus": True} and declined.params == {}
    assert trial_runs(opts.tracking_uri, "race") == []


# --- workers in other processes --------------------------------------------------------------------------
WORKER = """\
import json, pickle, sys
import torch
torch.set_num_threads(1)
from benchmarks.manifest import StudySpec
from benchmarks.tuning import HeartbeatSettings, TuneOptions, run_study
config = json.loads(sys.argv[1])
with open(config["inputs"], "rb") as handle:
    inputs = pickle.load(handle)
if config.get("epochs"):
    inputs.train_config = inputs.train_config.model_copy(update={"epochs": config["epochs"]})
options = TuneOptions(storage=config["storage"], tracking_uri=config["tracking_uri"], work_dir=config["work_dir"],
                      heartbeat=HeartbeatSettings(1, 3), poll_s=0.2, profile="smoke")
run_study(StudySpec.model_validate(config["spec"]), inputs, options)
"""


def start_worker(tmp: Path, inputs: TrialInputs, study: StudySpec, opts: TuneOptions, epochs: int | None = None):
    pickled = tmp / "inputs.pkl"
    if not pickled.exists():
        pickled.write_bytes(pickle.dumps(inputs))
    config = {
        "inputs": str(pickled),
        "storage": opts.storage,
        "tracking_uri": opts.tracking_uri,
        "work_dir": str(opts.work_dir),
        "spec": study.model_dump(),
        "epochs": epochs,
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "DGLBACKEND": "pytorch"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(config)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def prepare_stores(study: StudySpec, opts: TuneOptions) -> None:
    """Create the MLflow database and the study once, as a first worker would, before others start."""
    MlflowClient(tracking_uri=opts.tracking_uri).search_experiments()  # creates the tables
    open_study(study, opts, None, epochs=2)


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path: Path, stores: Path, inputs: TrialInputs) -> None:
    study_spec = spec("shared", 4, sampler="random")
    opts = options(stores, tmp_path)
    prepare_stores(study_spec, opts)
    workers = [start_worker(tmp_path, inputs, study_spec, opts) for _ in range(2)]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(outputs)
    study = optuna.load_study(study_name="shared", storage=opts.storage)
    counted = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 4
    # Any other trial was declined untrained by a worker that raced for the last one.
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state != TrialState.COMPLETE)
    runs = trial_runs(opts.tracking_uri, "shared")
    assert sorted(int(run.data.tags["cgat.trial"]) for run in runs) == sorted(t.number for t in counted)
    assert {t.user_attrs["mlflow_run_id"] for t in counted} == {run.info.run_id for run in runs}
    # The workers started together and agreed on one parent run.
    client = MlflowClient(tracking_uri=opts.tracking_uri)
    parents = client.search_runs(
        [client.get_experiment_by_name("cgat-bench").experiment_id],
        filter_string="tags.`cgat.study` = 'shared' and tags.`cgat.parent` = '1'",
    )
    assert len(parents) == 1
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {parents[0].info.run_id}
    print("trials per worker:", {w: sum(t.user_attrs["worker"] == w for t in counted) for w in {t.user_attrs["worker"] for t in counted}})


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried(tmp_path: Path, stores: Path, inputs: TrialInputs) -> None:
    study_spec = spec("retry", 2, sampler="random")
    opts = options(stores, tmp_path)
    prepare_stores(study_spec, opts)
    worker = start_worker(tmp_path, inputs, study_spec, opts, epochs=200)  # slow enough to die mid-trial
    study = optuna.load_study(study_name="retry", storage=opts.storage)
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in study.get_trials()):
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[0]
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    dead = study.get_trials()[0]
    assert dead.state == TrialState.RUNNING

    run_study(study_spec, inputs, opts)  # waits out the grace period, then retries the dead trial
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    client = MlflowClient(tracking_uri=opts.tracking_uri)
    dead_run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "FAILED" and dead_run.data.tags["optuna.state"] == "FAIL"
    retry_run = client.get_run(retries[0].user_attrs["mlflow_run_id"])
    assert retry_run.data.tags["cgat.retried_run"] == dead_run.info.run_id
    assert retry_run.data.tags["optuna.state"] == "COMPLETE"


# --- the command, through the manifest, the runner's pre-training and the data layer ---------------------------
MANIFEST = """\
data:
  cache_dir: {cache}
profiles:
  smoke:
    model: smoke
    device: cpu
    pretrain: {{epochs: 2, cycle_period: 2, batch_size: 16}}
    transfer: {{epochs: 2, cycle_period: 2, batch_size: 16}}
experiments:
  - name: gap
    source: gap_pbe
    target: gap_hse
studies:
  - name: gap-lr
    experiment: gap
    strategy: full
    n_trials: 3
    sampler: random
    lr: [1.0e-5, 1.0e-3]
"""


def write_task(tmp: Path) -> tuple[Path, Path]:
    """~80 real rows, 50 with an HSE gap (the transfer target) and all with a PBE gap (the source)."""
    with_hse = real_rows(50)
    hse_ids = {row["id"] for row in with_hse}
    others = []
    with gzip.open(shared_data(), "rt") as handle:
        for line in islice(handle, 2000):
            row = json.loads(line)
            if row["id"] not in hse_ids and row[TARGET] is None and row["natoms"] <= 12:
                others.append(row)
                if len(others) == 30:
                    break
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in with_hse + others))
    manifest = tmp / "experiments.yaml"
    manifest.write_text(MANIFEST.format(cache=tmp / "cache"))
    return manifest, data


def test_tune_command_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.tuning.cli import main

    manifest, data = write_task(tmp_path)
    assert main([str(manifest), "--study", "nope", "--profile", "smoke", "--data", str(data)]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    assert main([str(manifest), "--study", "gap-lr", "--profile", "smoke", "--data", str(tmp_path / "x.jsonl")]) == 2
    assert "data not found" in capsys.readouterr().err
    args = [str(manifest), "--study", "gap-lr", "--profile", "smoke", "--data", str(data), "--strategy", "none,partial"]
    assert main(args) == 2
    assert "comma list" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_command_runs_each_strategy_with_one_shared_pretraining(tmp_path: Path, stores: Path) -> None:
    pytest.importorskip("benchmarks.runner", reason="the experiment runner is not importable")
    from benchmarks.tuning.cli import main

    manifest, data = write_task(tmp_path)
    storage, tracking_uri = f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{stores / 'mlflow.db'}"
    args = [
        str(manifest), "--study", "gap-lr", "--profile", "smoke", "--data", str(data), "--n-trials", "2",
        "--strategy", "none,head", "--storage", storage, "--tracking-uri", tracking_uri,
        "--work-dir", str(tmp_path / "runs"), "--no-progress",
    ]
    assert main(args) == 0
    for name in ("gap-lr-none", "gap-lr-head"):
        assert states(optuna.load_study(study_name=name, storage=storage)) == {"COMPLETE": 2}
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_experiment_by_name("cgat-bench").experiment_id
    pretrains = client.search_runs([experiment_id], filter_string="tags.`cgat.kind` = 'pretrain'")
    assert len(pretrains) == 1 and pretrains[0].info.status == "FINISHED"
    head_runs = trial_runs(tracking_uri, "gap-lr-head")
    assert all(run.data.params["frozen_groups"] != "none" for run in head_runs)
    assert all(run.data.tags["cgat.pretrain_run_id"] == pretrains[0].info.run_id for run in head_runs)
    assert all(run.data.params["frozen_groups"] == "none" for run in trial_runs(tracking_uri, "gap-lr-none"))
    comparison = (tmp_path / "runs" / "tuning" / "gap-lr-comparison.md").read_text()
    assert "| gap-lr-none | none |" in comparison and "| gap-lr-head | head |" in comparison
    # A larger budget continues the study and reuses the pre-trained checkpoint.
    assert main([*args, "--n-trials", "3", "--strategy", "head"]) == 0  # the last of a repeated option wins
    assert len(client.search_runs([experiment_id], filter_string="tags.`cgat.kind` = 'pretrain'")) == 1
    assert states(optuna.load_study(study_name="gap-lr-head", storage=storage)) == {"COMPLETE": 3}
    assert states(optuna.load_study(study_name="gap-lr-none", storage=storage)) == {"COMPLETE": 2}


def test_the_report_reads_each_trial_and_its_per_material_errors(finished) -> None:
    from benchmarks.report.collect import collect_study_trials, collect_test_errors

    tmp, opts, result = finished
    study = optuna.load_study(study_name="lrwd", storage=opts.storage)
    trials = collect_study_trials(opts.tracking_uri)
    trials = trials[trials["study"] == "lrwd"].sort_values("objective").reset_index(drop=True)
    # every completed trial of the study so far (another test of this module continues the study)
    completed = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == len(completed) >= 3
    assert sorted(trials["objective"]) == pytest.approx(sorted(completed))
    assert set(trials["train_size"]) == {40}
    assert set(trials["stop_reason"]) == {"cap"}  # the smoke profile's fixed epochs: no plateau
    errors = collect_test_errors(opts.tracking_uri, list(trials["run_id"]))
    assert set(errors) == set(trials["run_id"])
    for row in trials.itertuples():
        # the artifact's errors average to the logged test MAE, over the 20 test materials
        assert len(errors[row.run_id]) == 20
        assert errors[row.run_id].mean() == pytest.approx(row.test_mae, rel=1e-5)
