"""MLflow tracking of training and transfer runs, read back from a temporary SQLite store."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import cgat_dgl

from cgat_dgl.model import ModelConfig
from cgat_dgl.training import tracking
from cgat_dgl.training.config import TrainConfig
from cgat_dgl.training.tracking import PARENT_TAG, PRETRAIN_TAG, Tracker, flatten, resolve_tracking_uri
from cgat_dgl.training.trainer import train
from tests.training_fixtures import single_thread, three_sets, tracking_store  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

SMOKE = ModelConfig.preset("smoke")
CONFIG = TrainConfig(epochs=2, batch_size=6, lr=3e-3, cycle_period=4, device="cpu")


@pytest.fixture(scope="module")
def store() -> str:
    return tracking_store()


@pytest.fixture(scope="module")
def runs(store: str, tmp_path_factory):
    """A parent run with two children: a pre-training and a transfer from its checkpoint."""
    work = tmp_path_factory.mktemp("runs")
    with Tracker("experiment", experiment="tests", tracking_uri=store) as parent:
        with parent.child("pretrain") as pre_tracker:
            pre_tracker.log_config(data={"property": "e_form_pbe", "train_size": 12})
            pre = train(SMOKE, CONFIG, *three_sets(24), out_dir=work / "pre", tracker=pre_tracker)
        with parent.child("full") as transfer_tracker:
            transfer = train(SMOKE, TrainConfig.transfer(epochs=1, batch_size=6, device="cpu"), *three_sets(24, "gap_pbe"),
                             out_dir=work / "full", init_checkpoint=pre.checkpoint, tracker=transfer_tracker)  # fmt: skip
    return parent, pre_tracker, pre, transfer_tracker, transfer


def test_params_metrics_and_artifact_of_a_training_run(store: str, runs) -> None:
    parent, pre_tracker, pre, _, _ = runs
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(pre_tracker.run_id)
    params = run.data.params
    assert params["model.atom_fea_len"] == str(SMOKE.atom_fea_len)
    assert params["model.head_widths"] == str(SMOKE.head_widths)
    assert params["train.lr"] == str(CONFIG.lr) and params["train.strategy"] == "none"
    assert params["data.property"] == "e_form_pbe"
    assert params["n_trainable"] == str(pre.n_trainable) and params["n_frozen"] == "0"

    for name in ("train_mae", "val_mae", "lr"):
        history = client.get_metric_history(pre_tracker.run_id, name)
        assert sorted(m.step for m in history) == [0, 1]
        logged = {m.step: m.value for m in history}
        assert logged == pytest.approx({row["epoch"]: row[name] for row in pre.history})
    metrics = run.data.metrics
    assert metrics["test_mae"] == pytest.approx(pre.test["mae"])
    assert metrics["test_rmse"] == pytest.approx(pre.test["rmse"])
    assert metrics["test_r2"] == pytest.approx(pre.test["r2"])
    assert metrics["best_val_mae"] == pytest.approx(pre.best_val_mae)

    artifacts = [a.path for a in client.list_artifacts(pre_tracker.run_id, "checkpoints")]
    assert artifacts == ["checkpoints/best.pt"]
    assert run.info.status == "FINISHED"
    assert run.data.tags[PARENT_TAG] == parent.run_id
    # What produced the result: this code and the packages it ran on.
    assert run.data.tags["cgat.version.cgat_dgl"] == cgat_dgl.__version__
    assert run.data.tags["cgat.version.torch"] == metadata.version("torch")
    assert run.data.tags["cgat.version.dgl"] not in ("", "absent")
    assert run.data.tags["cgat.cpu_kernels"] == "on"  # the fast implementation in float32 on CPU


def test_transfer_run_links_its_pretraining_run(store: str, runs) -> None:
    parent, pre_tracker, _, transfer_tracker, transfer = runs
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(transfer_tracker.run_id)
    assert run.data.tags[PRETRAIN_TAG] == pre_tracker.run_id
    assert run.data.params["pretrain_run_id"] == pre_tracker.run_id
    assert run.data.params["train.strategy"] == "full"
    assert run.data.tags[PARENT_TAG] == parent.run_id
    children = client.search_runs([parent.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent.run_id}'")
    assert {r.info.run_id for r in children} == {pre_tracker.run_id, transfer_tracker.run_id}


def test_a_resumed_run_logs_into_the_same_run(store: str, runs) -> None:
    _, pre_tracker, _, _, _ = runs
    attached = Tracker.attach(pre_tracker.run_id, tracking_uri=store)
    attached.log_params({"train": CONFIG.model_dump(mode="json")})  # same values again: accepted
    attached.log_params({"train": {"lr": 1.0}})  # a changed value keeps the first one
    attached.log_epoch(2, {"val_mae": 0.5})
    client = MlflowClient(tracking_uri=store)
    assert client.get_run(pre_tracker.run_id).data.params["train.lr"] == str(CONFIG.lr)
    assert [m.step for m in client.get_metric_history(pre_tracker.run_id, "val_mae")][-1] == 2


def test_failed_runs_are_marked(store: str) -> None:
    with pytest.raises(RuntimeError):
        with Tracker("broken", experiment="tests", tracking_uri=store) as tracker:
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=store).get_run(tracker.run_id).info.status == "FAILED"


def test_artifacts_live_beside_the_sqlite_file(store: str, runs) -> None:
    parent = runs[0]
    experiment = MlflowClient(tracking_uri=store).get_experiment(parent.experiment_id)
    database = Path(store[len("sqlite:///") :])
    assert experiment.artifact_location == (database.parent / "artifacts").as_uri()


def test_tracking_uri_resolution(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    # the user's folder, not the package's: an installed package must not write into site-packages
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'mlflow.db'}"
    assert resolve_tracking_uri(base=tmp_path / "project") == f"sqlite:///{tmp_path / 'project' / 'mlflow' / 'mlflow.db'}"
    assert not hasattr(tracking, "REPO_ROOT")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert resolve_tracking_uri() == "sqlite:////elsewhere/x.db"
    assert resolve_tracking_uri("http://server:5000") == "http://server:5000"


def test_flatten_nested_config() -> None:
    flat = flatten({"model": {"widths": [8, 4], "edge": {"mode": "paper"}}, "train": {"lr": 0.1, "extra": None}})
    assert flat == {"model.widths": "[8, 4]", "model.edge.mode": "paper", "train.lr": "0.1", "train.extra": "None"}
