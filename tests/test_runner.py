"""The experiment runner: expansion into MLflow runs, shared pre-training, idempotent reruns,
failures that do not stop the others, and a run killed mid-training that resumes as the same run."""

from __future__ import annotations

import gzip
import json

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmarks import runner as runner_module
from benchmarks.manifest import load_manifest
from benchmarks.report.collect import PREDICTIONS_ARTIFACT, collect_test_errors
from benchmarks.runner import Runner
from benchmarks.sample_data import write_gap_sample
from benchmarks.store import KEY_TAG, Store
from smoke_manifests import smoke_options, write_smoke_manifest

REPO = Path(__file__).resolve().parents[1]

EXPERIMENTS = """\
  - name: gap
    source: gap_pbe
    target: gap_hse
    strategies: {strategies}
    train_sizes: {sizes}
    subsets_above: {{gap_above_0.1: 0.1}}
  - name: eform_to_gap
    source: e_form_pbe
    target: gap_hse
    strategies: [full]
    transfer_lr_factor: 0.1
"""


@pytest.fixture(scope="module")
def small_data(shared_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 real rows: 60 with an HSE gap (40 of them open), the rest PBE only."""
    return write_gap_sample(shared_data_path, tmp_path_factory.mktemp("runner_data") / "small.jsonl.gz")


def write_manifest(
    folder: Path, epochs: int = 2, pre_epochs: int = 2, strategies: str = "[none, head, full]", sizes: str = "[20, 1.0]"
) -> Path:
    """The runner tests' manifest: gap_pbe -> gap_hse and an inter-property e_form_pbe -> gap_hse."""
    return write_smoke_manifest(
        folder, EXPERIMENTS.format(strategies=strategies, sizes=sizes),
        pretrain=f"epochs: {pre_epochs}, batch_size: 32, lr: 1.0e-3, cycle_period: 2",
        transfer=f"epochs: {epochs}, batch_size: 16, lr: 1.0e-3, cycle_period: 2",
    )


def make_runner(
    tmp_path: Path, data: Path, epochs: int = 2, pre_epochs: int = 2, strategies: str = "[none, head, full]",
    sizes: str = "[20, 1.0]", only: list[str] | None = None,
) -> Runner:
    manifest = write_manifest(tmp_path, epochs, pre_epochs, strategies, sizes)
    return Runner(load_manifest(manifest), smoke_options(tmp_path, data, only=only))


def child_runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("cgat-bench")
    return [r for r in client.search_runs([experiment.experiment_id], max_results=1000) if KEY_TAG in r.data.tags]


@pytest.mark.slow
def test_run_rerun_and_failures(tmp_path: Path, small_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = make_runner(tmp_path, small_data)
    assert len(runner.pretrains) == 2 and len(runner.transfers) == 7
    assert {status for _, status in runner.status()} == {"NEW"}

    real_train = runner_module.train

    def failing_head(*args, **kwargs):
        if args[1].strategy == "head":
            raise RuntimeError("injected failure")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner_module, "train", failing_head)
    outcome = runner.run()
    assert len(outcome.failed) == 2 and all("injected failure" in e for e in outcome.failed.values())
    assert len(outcome.done) == 2 + 5
    uri = runner.store.tracking_uri
    runs = child_runs(uri)
    assert len(runs) == 9
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 2 and all("injected failure" in r.data.tags["cgat.error"] for r in failed)

    # Transfer runs point at the one shared pre-training run of their source property.
    by_key = {r.data.tags[KEY_TAG]: r for r in runs}
    for spec in runner.transfers:
        run = by_key[spec.key]
        assert run.data.tags["cgat.strategy"] == spec.strategy
        assert int(run.data.params["train_size"]) == (20 if spec.train_size == 20 else 48)
        if spec.pretrain is not None and run.info.status == "FINISHED" and spec.experiment == "gap":
            assert run.data.tags["cgat.pretrain_run_id"] == by_key[spec.pretrain.key].info.run_id
            # the subset MAE is over the same per-material predictions as the run's test MAE
            errors = collect_test_errors(uri, [run.info.run_id])[run.info.run_id]
            frame = pd.read_csv(
                MlflowClient(uri).download_artifacts(run.info.run_id, PREDICTIONS_ARTIFACT, str(tmp_path)),
                dtype={"id": str},
            ).set_index("id")
            above = frame.index[frame["target"] > 0.1]
            assert run.data.metrics["test_mae_gap_above_0.1"] == pytest.approx(errors[above].mean(), rel=1e-5)
            assert run.data.metrics["test_mae"] == pytest.approx(errors.mean(), rel=1e-5)
        assert run.data.tags["mlflow.parentRunId"]

    # A rerun retries the failed runs in their own MLflow runs and skips the finished ones.
    monkeypatch.setattr(runner_module, "train", real_train)
    rerun = make_runner(tmp_path, small_data).run()
    assert sorted(rerun.done) == sorted(outcome.failed)
    assert len(rerun.skipped) == 7
    runs = child_runs(uri)
    assert len(runs) == 9 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.info.run_id for r in runs if r.data.tags[KEY_TAG] in outcome.failed} == {r.info.run_id for r in failed}

    # Nothing left: a third run does nothing.
    third = make_runner(tmp_path, small_data).run()
    assert third.done == [] and len(third.skipped) == 9


KILL_SCRIPT = """
import sys
from pathlib import Path
from benchmarks.manifest import load_manifest
from benchmarks.report.collect import PREDICTIONS_ARTIFACT, collect_test_errors
from benchmarks.runner import Runner, RunnerOptions
from benchmarks.sample_data import write_gap_sample
tmp = Path(sys.argv[1])
options = RunnerOptions(profile="smoke", data_path=Path(sys.argv[2]), work_dir=tmp / "work",
                        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", progress=False, only=["gap"])
Runner(load_manifest(tmp / "experiments.yaml"), options).run()
"""


TWINS = """\
  - {name: gap, source: gap_pbe, target: gap_hse, strategies: [none], train_sizes: [20]}
  - {name: gap_sizes, source: gap_pbe, target: gap_hse, strategies: [none], train_sizes: [10, 20]}
"""


@pytest.mark.slow
def test_a_run_two_experiments_share_trains_once_and_reports_in_both(tmp_path: Path, small_data: Path) -> None:
    from benchmarks.report import collect_runs

    one_epoch = "epochs: 1, batch_size: {}, lr: 1.0e-3, cycle_period: 2"
    manifest = load_manifest(write_smoke_manifest(tmp_path, TWINS, pretrain=one_epoch.format(32), transfer=one_epoch.format(16)))

    def run(only: list[str] | None) -> runner_module.Outcome:
        return Runner(manifest, smoke_options(tmp_path, small_data, only=only)).run()

    assert len(run(["gap"]).done) == 1
    # the second experiment asks for gap's run again and for one of its own
    outcome = run(None)
    assert (len(outcome.done), len(outcome.skipped)) == (1, 1)
    runs, _ = collect_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    shared = runs[runs["train_size"] == 20]
    assert sorted(shared["experiment"]) == ["gap", "gap_sizes"] and shared["run_id"].nunique() == 1
    assert list(runs.loc[runs["train_size"] == 10, "experiment"]) == ["gap_sizes"]


@pytest.mark.slow
def test_killed_run_resumes_as_the_same_run(tmp_path: Path, small_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = make_runner(tmp_path, small_data, epochs=2, pre_epochs=30, strategies="[full]", sizes="[1.0]")
    runner.task_data  # build the graph cache before the child process starts
    pretrain = runner.pretrains[0]
    last = tmp_path / "work" / "checkpoints" / pretrain.key / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(small_data)], env=env)
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert last.exists(), "the pre-training run never wrote a checkpoint"
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    runs = child_runs(runner.store.tracking_uri)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"
    killed_id = runs[0].info.run_id

    resumed = make_runner(
        tmp_path, small_data, epochs=2, pre_epochs=30, strategies="[full]", sizes="[1.0]", only=["gap"]
    )
    outcome = resumed.run()
    assert not outcome.failed
    assert f"[resume] {pretrain.label}" in capsys.readouterr().out  # says it continues, not starts afresh
    runs = child_runs(runner.store.tracking_uri)
    keys = [r.data.tags[KEY_TAG] for r in runs]
    assert len(keys) == len(set(keys)) == 1 + 1
    assert {r.info.status for r in runs} == {"FINISHED"}
    pre = [r for r in runs if r.data.tags[KEY_TAG] == pretrain.key][0]
    assert pre.info.run_id == killed_id
    epochs = [m.step for m in MlflowClient(runner.store.tracking_uri).get_metric_history(killed_id, "val_mae")]
    # The resumed run went on to the last epoch (0-based) without starting over.
    assert max(epochs) == 29 and len(set(epochs)) >= 29 and len(epochs) <= 31


@pytest.mark.slow
def test_cli_dry_run_run_and_report(tmp_path: Path, small_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli import main

    make_runner(tmp_path, small_data, strategies="[none, full]")  # writes the manifest
    common = [
        "--profile", "smoke", "--data", str(small_data), "--work-dir", str(tmp_path / "work"),
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    manifest = str(tmp_path / "experiments.yaml")
    assert main(["run", manifest, *common, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "7 runs: 7 new" in out

    report_dir = tmp_path / "reports"
    assert main(["run", manifest, *common, "--no-progress", "--report-dir", str(report_dir)]) == 0
    out = capsys.readouterr().out
    assert "read 200, kept 200" in out and "done in" in out and "0 failed" in out
    done = [line for line in out.splitlines() if line.startswith("[done] ")]
    assert len(done) == 7 and all(re.search(r"test MAE [0-9.e-]+, (plateau|cap) after \d+ epochs", line) for line in done)
    folder = report_dir / "smoke"
    for name in ["report.md", "table1.csv", "table1.md", "fits.csv", "extrapolations.csv", "learning_curves.png",
                 "loglog_train_size.png", "target_distributions.png", "element_counts.png", "runs.csv"]:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    table = (folder / "table1.md").read_text()
    assert "gap_pbe → gap_hse" in table and "no transfer" in table and "full transfer" in table

    # The experiment's parent run shows the results in the runs table, links the report run and lasts
    # until its last child ended.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("cgat-bench").experiment_id
    rows = pd.read_csv(folder / "table1.csv")
    rows = rows[(rows["strategy"] != "pretrain") & (rows["metric"] == "test_mae")]
    experiment = rows["experiment"].value_counts().idxmax()  # the one with several strategies and sizes
    rows = rows[rows["experiment"] == experiment]
    parent = next(run for run in client.search_runs([experiment_id], filter_string="tags.`cgat.parent` = '1'")
                  if run.data.tags["cgat.experiment"] == experiment)
    assert len(rows) >= 2
    for row in rows.itertuples():
        assert parent.data.metrics[f"test_mae.{row.strategy}.n{int(row.train_size)}"] == pytest.approx(row.mae_mean)
    report_run = client.get_run(parent.data.tags["cgat.report_run_id"])
    assert report_run.data.tags["cgat.kind"] == "report"
    assert report_run.info.run_id in parent.data.tags["mlflow.note.content"]
    children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.end_time == max(child.info.end_time for child in children)
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["table1.csv"]

    # Each pre-training is a version of its registered model, a transfer names the version it starts
    # from, and `cgat predict` takes that version as models:/NAME/VERSION.
    pretrains = client.search_runs([experiment_id], filter_string="tags.`cgat.kind` = 'pretrain'")
    assert {model.name for model in client.search_registered_models()} == {
        f"cgat-smoke-{run.data.tags['cgat.source']}" for run in pretrains
    }
    transfer = client.search_runs([experiment_id], filter_string="tags.`cgat.strategy` = 'full'")[0]
    name, version = transfer.data.tags["cgat.pretrained_model"].split("/")
    registered = client.get_model_version(name, version)
    assert registered.run_id == transfer.data.tags["cgat.pretrain_run_id"]
    # a version says which pre-training it is: pool sizes of one property are versions of one model
    pretrain = client.get_run(registered.run_id)
    assert registered.tags["cgat.run_key"] == pretrain.data.tags["cgat.run_key"]
    assert float(registered.tags["cgat.pretrain_size"]) == 1.0
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    with gzip.open(small_data, "rt") as rows:
        row = json.loads(next(rows))
    (cifs / f"{row['id']}.cif").write_text(row["cif"])
    from cgat_dgl.cli import main as cgat_main

    capsys.readouterr()
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cgat_main(["predict", "--checkpoint", f"models:/{name}/{version}", "--tracking-uri", tracking,
                      str(cifs), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("id,") and printed[1].startswith(f"{row['id']},")

    assert main(["run", manifest, *common, "--dry-run"]) == 0
    assert "7 runs: 7 finished" in capsys.readouterr().out

    # The same profile with another transfer length: its stored transfers are not what the manifest
    # would make now, so the report leaves them out (and says so) rather than mixing them in.
    changed = tmp_path / "changed.yaml"
    changed.write_text(Path(manifest).read_text().replace("transfer: {epochs: 2,", "transfer: {epochs: 3,"))
    assert changed.read_text() != Path(manifest).read_text()
    assert main(["report", str(changed), *common[:4], *common[6:], "--report-dir", str(tmp_path / "other")]) == 0
    assert "left out 5 finished runs of profile 'smoke'" in capsys.readouterr().out  # its 5 transfers
    kept = pd.read_csv(tmp_path / "other" / "smoke" / "runs.csv")
    assert set(kept["kind"]) == {"pretrain"}

    # Runs a SIGKILL can leave RUNNING: a report killed while logging, a parent killed between its
    # creation and its end. The next report closes the one, the next lookup of the parent the other.
    killed_report = client.create_run(experiment_id, run_name="report [smoke]", tags={"cgat.kind": "report"})
    parent = client.search_runs([experiment_id], filter_string="tags.`cgat.parent` = '1'")[0]
    client.update_run(parent.info.run_id, status="RUNNING")

    # A second run trains nothing and rewrites the report from the store (earlier report runs included).
    (folder / "table1.md").unlink()
    assert main(["run", manifest, *common, "--no-progress", "--report-dir", str(report_dir)]) == 0
    out = capsys.readouterr().out
    assert "0 trained, 7 already finished, 0 failed" in out
    assert f"closed the interrupted report run {killed_report.info.run_id} (KILLED)" in out
    assert (folder / "table1.md").read_text() == table
    assert client.get_run(killed_report.info.run_id).info.status == "KILLED"
    # Every child is finished, so no parent was needed; the next lookup of the parent finishes it.
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "work")
    assert store.parent(parent.data.tags["cgat.experiment"], "smoke", {}) == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert not client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
