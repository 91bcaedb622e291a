"""The training loop on real crystals with the smoke-sized CGAT: learning, schedule, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.training.checkpoint import read_checkpoint
from cgat_dgl.training.config import TrainConfig
from cgat_dgl.training.inference import load_checkpoint, predict
from cgat_dgl.training.metrics import regression_metrics
from cgat_dgl.training.tracking import Tracker
from cgat_dgl.training.run_log import EPOCH_METRICS
from cgat_dgl.training.trainer import TrainResult, train
from tests.training_fixtures import real_dataset, single_thread, three_sets  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

SMOKE = ModelConfig.preset("smoke")
# 12 train / 6 val / 6 test; batch 5 and eval batch 4 leave partial batches everywhere.
BASE = TrainConfig(epochs=4, batch_size=5, eval_batch_size=4, lr=3e-3, cycle_period=4, seed=1, device="cpu")


@pytest.fixture(scope="module")
def sets():
    return three_sets(24)


@pytest.fixture(scope="module")
def baseline(sets, tmp_path_factory) -> TrainResult:
    return train(SMOKE, BASE, *sets, out_dir=tmp_path_factory.mktemp("baseline"))


def test_overfits_a_small_batch(tmp_path: Path) -> None:
    data = real_dataset(16)
    mean_predictor_mae = float(np.abs(data.targets - data.targets.mean()).mean())
    config = TrainConfig(epochs=60, batch_size=16, lr=1e-2, cycle_base_factor=1.0, cycle_period=10, seed=0, device="cpu")
    result = train(SMOKE, config, data, data.subset(data.ids[:4]), None, out_dir=tmp_path)
    maes = [row["train_mae"] for row in result.history]
    assert maes[0] > 0.8 * mean_predictor_mae  # starts near the mean predictor
    assert min(maes[-5:]) < 0.3 * mean_predictor_mae
    assert result.test == {}


def test_history_and_triangular_schedule(baseline: TrainResult) -> None:
    assert [row["epoch"] for row in baseline.history] == [0, 1, 2, 3]
    lrs = [row["lr"] for row in baseline.history]
    # factor 0.1 at the cycle start, 1.0 at mid-period (epoch 2 of a 4-epoch cycle), back down after
    np.testing.assert_allclose(lrs, [BASE.lr * f for f in (0.1, 0.55, 1.0, 0.55)], rtol=1e-6)
    assert all(np.isfinite(row["train_mae"]) and np.isfinite(row["val_mae"]) for row in baseline.history)
    assert baseline.best_val_mae == min(row["val_mae"] for row in baseline.history)
    assert baseline.history[baseline.best_epoch]["val_mae"] == baseline.best_val_mae
    assert baseline.n_trainable == sum(p.numel() for p in CGAT(SMOKE).parameters())
    assert baseline.n_frozen == 0


def test_test_metrics_cover_the_whole_test_set(baseline: TrainResult, sets) -> None:
    _, _, test_set = sets
    model, normalizer, state = load_checkpoint(baseline.checkpoint)
    predicted = predict(model, normalizer, test_set, batch_size=4)
    assert predicted.shape == (len(test_set),)  # 6 items in batches of 4: the partial batch counts
    expected = regression_metrics(predicted, test_set.targets)
    for name in ("mae", "rmse", "r2"):
        assert baseline.test[name] == pytest.approx(expected[name], rel=1e-5)
    assert state["epoch"] == baseline.best_epoch + 1
    assert baseline.normalization == pytest.approx(
        {"mean": float(sets[0].targets.mean()), "std": float(sets[0].targets.astype(np.float64).std())}, rel=1e-5
    )


def test_same_seed_same_result_other_seed_differs(baseline: TrainResult, sets, tmp_path: Path) -> None:
    again = train(SMOKE, BASE, *sets, out_dir=tmp_path / "again")
    assert again.history == baseline.history
    assert again.test == baseline.test
    other = train(SMOKE, BASE.model_copy(update={"seed": 2, "epochs": 1}), *sets, out_dir=tmp_path / "other")
    assert other.history[0]["train_mae"] != baseline.history[0]["train_mae"]


class Interrupted(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(baseline: TrainResult, sets, tmp_path: Path) -> None:
    def stop_after_second_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(SMOKE, BASE, *sets, out_dir=tmp_path, epoch_callback=stop_after_second_epoch)
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    seen: list[int] = []
    resumed = train(SMOKE, BASE, *sets, out_dir=tmp_path, epoch_callback=lambda epoch, _: seen.append(epoch))
    assert seen == [2, 3]  # only the remaining epochs ran
    assert resumed.history == baseline.history
    assert resumed.test == baseline.test
    assert resumed.best_epoch == baseline.best_epoch
    resumed_weights = read_checkpoint(resumed.checkpoint)["model_state"]
    baseline_weights = read_checkpoint(baseline.checkpoint)["model_state"]
    assert all(torch.equal(resumed_weights[k], baseline_weights[k]) for k in baseline_weights)


def test_an_epoch_checkpointed_but_not_logged_is_logged_on_resume(baseline: TrainResult, sets, tmp_path: Path) -> None:
    """A kill between an epoch's last.pt and its MLflow logging: the resumed run logs that epoch."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    class KilledWhileLogging(Tracker):
        def log_epoch(self, epoch: int, metrics) -> None:
            if epoch == 1:
                raise Interrupted  # last.pt of epoch 1 is written; its metrics never reach MLflow
            super().log_epoch(epoch, metrics)

    tracker = KilledWhileLogging("killed", experiment="tests", tracking_uri=store)
    with pytest.raises(Interrupted):
        train(SMOKE, BASE, *sets, out_dir=tmp_path / "run", tracker=tracker)
    client = MlflowClient(tracking_uri=store)
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val_mae")] == [0]

    train(SMOKE, BASE, *sets, out_dir=tmp_path / "run", tracker=Tracker.attach(tracker.run_id, tracking_uri=store))
    for name in EPOCH_METRICS:
        history = sorted(client.get_metric_history(tracker.run_id, name), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [
            (int(row["epoch"]), pytest.approx(row[name], rel=1e-6)) for row in baseline.history
        ], name


def test_resume_of_a_finished_run_only_evaluates(baseline: TrainResult, sets) -> None:
    calls: list[int] = []
    out_dir = baseline.checkpoint.parent
    again = train(SMOKE, BASE, *sets, out_dir=out_dir, epoch_callback=lambda epoch, _: calls.append(epoch))
    assert calls == []
    assert again.test == baseline.test and again.history == baseline.history


def test_resume_refuses_a_changed_config(baseline: TrainResult, sets) -> None:
    changed = BASE.model_copy(update={"lr": 1e-3})
    with pytest.raises(ValueError, match="lr"):
        train(SMOKE, changed, *sets, out_dir=baseline.checkpoint.parent)


def test_a_folder_resumes_only_the_run_it_was_made_for(sets, tmp_path: Path) -> None:
    out = tmp_path / "run"
    short = BASE.model_copy(update={"epochs": 1})
    train(SMOKE, short, *sets, out_dir=out, metadata={"property": "gap_pbe"})
    files = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(ValueError, match="property 'gap_pbe', this run 'e_form_pbe'.*nothing in it was changed"):
        train(SMOKE, BASE, *sets, out_dir=out, metadata={"property": "e_form_pbe"})
    train_set, val_set, test_set = sets
    with pytest.raises(ValueError, match="other train materials"):
        train(SMOKE, BASE, train_set.subset(train_set.ids[:8]), val_set, test_set, out_dir=out,
              metadata={"property": "gap_pbe"})
    assert {path.name: path.read_bytes() for path in out.iterdir()} == files
    # the same property and materials resume
    resumed = train(SMOKE, BASE, *sets, out_dir=out, metadata={"property": "gap_pbe"})
    assert len(resumed.history) == BASE.epochs


def test_bad_arguments_are_clear_errors(sets, tmp_path: Path) -> None:
    train_set, val_set, test_set = sets
    with pytest.raises(ValueError, match="init checkpoint"):
        train(SMOKE, BASE.model_copy(update={"strategy": "head"}), *sets, out_dir=tmp_path)
    with pytest.raises(ValueError, match="from scratch"):
        train(SMOKE, BASE, *sets, out_dir=tmp_path, init_checkpoint=tmp_path / "x.pt")
    with pytest.raises(ValueError, match="validation set is empty"):
        train(SMOKE, BASE, train_set, val_set.subset([]), test_set, out_dir=tmp_path)
    with pytest.raises(ValueError, match="extra"):
        TrainConfig(epoch=3)  # a typo is not silently ignored


def test_loader_worker_processes_give_the_same_result(baseline: TrainResult, sets, tmp_path: Path) -> None:
    with_workers = train(SMOKE, BASE.model_copy(update={"num_workers": 1}), *sets, out_dir=tmp_path)
    assert with_workers.history == baseline.history
    assert with_workers.test == baseline.test


def test_losses_and_normalizer() -> None:
    from cgat_dgl.training.normalization import Normalizer
    from cgat_dgl.training.trainer import regression_loss

    output = torch.tensor([[1.0, 0.0], [2.0, np.log(2.0)]])
    target = torch.tensor([0.0, 4.0])
    assert float(regression_loss(output, target, "l1")) == pytest.approx(1.5)
    # Laplace NLL: sqrt(2) |y - mu| / sigma + log sigma, averaged
    expected = (np.sqrt(2) * 1.0 + (np.sqrt(2) * 2.0 / 2.0 + np.log(2.0))) / 2
    assert float(regression_loss(output, target, "robust_l1")) == pytest.approx(expected, rel=1e-6)
    constant = Normalizer.fit(np.zeros(5))  # e.g. only metals: a zero std must not divide
    assert constant.as_dict() == {"mean": 0.0, "std": 1.0}
    normalizer = Normalizer(2.0, 4.0)
    values = torch.tensor([-2.0, 2.0, 10.0])
    assert torch.allclose(normalizer.decode(normalizer.encode(values)), values)
    with pytest.raises(ValueError, match="positive"):
        Normalizer(0.0, 0.0)


def test_early_stopping_ends_on_a_plateau_and_a_resumed_run_stays_stopped(sets, tmp_path: Path) -> None:
    # an unreachable margin: no epoch after the first counts as an improvement
    config = BASE.model_copy(update={"epochs": 20, "schedule": "plateau", "patience": 2, "min_delta": 0.99})
    result = train(SMOKE, config, *sets, out_dir=tmp_path)
    assert (result.epochs_run, result.stop_reason, result.converged) == (3, "plateau", True)
    assert len(result.history) == 3
    again = train(SMOKE, config, *sets, out_dir=tmp_path)  # resumes from last.pt: nothing left to train
    assert again.history == result.history and again.stop_reason == "plateau"
    capped = train(SMOKE, BASE.model_copy(update={"epochs": 2, "patience": 5}), *sets, out_dir=tmp_path / "cap")
    assert (capped.epochs_run, capped.stop_reason, capped.converged) == (2, "cap", False)


def test_a_capped_run_continues_under_a_larger_cap(sets, tmp_path: Path) -> None:
    config = BASE.model_copy(update={"schedule": "plateau", "patience": 50})
    first = train(SMOKE, config.model_copy(update={"epochs": 2}), *sets, out_dir=tmp_path)
    assert first.stop_reason == "cap"
    longer = train(SMOKE, config.model_copy(update={"epochs": 4}), *sets, out_dir=tmp_path)
    straight = train(SMOKE, config.model_copy(update={"epochs": 4}), *sets, out_dir=tmp_path / "straight")
    assert longer.epochs_run == 4 and longer.history == straight.history


def test_a_cosine_run_refuses_another_cap_on_resume(sets, tmp_path: Path) -> None:
    config = BASE.model_copy(update={"schedule": "cosine", "epochs": 2})
    train(SMOKE, config, *sets, out_dir=tmp_path)
    with pytest.raises(ValueError, match="anneal_span"):  # the anneal is spread over the cap
        train(SMOKE, config.model_copy(update={"epochs": 4}), *sets, out_dir=tmp_path)


def test_an_annealed_cosine_run_continues_at_its_floor_under_a_larger_cap(sets, tmp_path: Path) -> None:
    config = BASE.model_copy(update={"schedule": "cosine", "epochs": 2, "patience": 50})
    train(SMOKE, config, *sets, out_dir=tmp_path)
    held = config.model_copy(update={"epochs": 4, "anneal_epochs": 2})
    longer = train(SMOKE, held, *sets, out_dir=tmp_path)
    straight = train(SMOKE, held, *sets, out_dir=tmp_path / "straight")
    assert longer.epochs_run == 4 and longer.history == straight.history
    assert [row["lr"] for row in longer.history[2:]] == pytest.approx([config.lr * config.min_lr_factor] * 2)


def test_a_small_set_is_passed_over_until_an_epoch_holds_epoch_structures(sets, tmp_path: Path) -> None:
    config = BASE.model_copy(update={"epochs": 2, "epoch_structures": 30})
    result = train(SMOKE, config, *sets, out_dir=tmp_path)
    # 12 training structures, 3 passes per epoch: 36 structures, the batches spanning the passes
    assert [row["structures"] for row in result.history] == [36, 36]
    assert result.trained_structures == 72
    plain = train(SMOKE, config.model_copy(update={"epoch_structures": 12}), *sets, out_dir=tmp_path / "one")
    assert [row["structures"] for row in plain.history] == [12, 12]


def test_one_function_builds_every_train_config() -> None:
    from pydantic import ValidationError

    from cgat_dgl.training.config import TrainConfig, train_config

    # None is "not given": the default is TrainConfig's own
    assert train_config({"lr": None, "batch_size": 8}) == TrainConfig(batch_size=8)
    # overrides win over the stage's settings, and the result is validated whatever changed
    assert train_config({"lr": 1e-3, "epochs": 5}, lr=2e-3).lr == 2e-3
    with pytest.raises(ValidationError, match="lr"):
        train_config(TrainConfig().model_dump(), lr=-1.0)
    with pytest.raises(ValidationError, match="extra"):
        train_config({"learning_rate": 1e-3})
