"""Checkpoint files: weights-only loading, round trips that predict the same values, atomic writes."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.training.checkpoint import (
    capture_rng_state,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from cgat_dgl.training.inference import load_checkpoint, predict
from cgat_dgl.training.normalization import Normalizer
from cgat_dgl.training.trainer import BEST_NAME, LAST_NAME
from tests.training_fixtures import pretrained_checkpoint, single_thread, three_sets  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

SMOKE = ModelConfig.preset("smoke")


def test_training_checkpoints_load_weights_only() -> None:
    folder = pretrained_checkpoint().parent
    for name in (BEST_NAME, LAST_NAME):
        state = torch.load(folder / name, weights_only=True)
        assert ModelConfig(**state["model_config"]) == SMOKE
        assert set(state["normalization"]) == {"mean", "std"}
        assert state["train_config"]["epochs"] == 2
    last = torch.load(folder / LAST_NAME, weights_only=True)
    assert {"optimizer", "scheduler", "rng", "history"} <= set(last)
    assert last["epoch"] == 2 and len(last["history"]) == 2


def test_round_trip_predicts_the_same_values(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = CGAT(SMOKE).eval()
    normalizer = Normalizer(mean=-1.3, std=0.7)
    data = three_sets(24)[2]
    before = predict(model, normalizer, data, batch_size=4)
    path = save_checkpoint(
        {"model_state": model.state_dict(), "model_config": SMOKE.model_dump(mode="json"),
         "normalization": normalizer.as_dict(), "metadata": {"property": "e_form_pbe"}},
        tmp_path / "model.pt",
    )  # fmt: skip
    loaded, loaded_normalizer, state = load_checkpoint(path)
    after = predict(loaded, loaded_normalizer, data, batch_size=3)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert state["metadata"] == {"property": "e_form_pbe"}
    assert loaded_normalizer.as_dict() == pytest.approx({"mean": -1.3, "std": 0.7})


def test_the_best_checkpoint_reproduces_its_test_metrics() -> None:
    state = read_checkpoint(pretrained_checkpoint())
    model, normalizer, _ = load_checkpoint(pretrained_checkpoint())
    assert not model.training
    val_set = three_sets(24)[1]
    predicted = predict(model, normalizer, val_set)
    mae = float(np.abs(predicted - val_set.targets).mean())
    assert mae == pytest.approx(state["best_val_mae"], rel=1e-5)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint({"value": torch.ones(3)}, tmp_path / "last.pt")

    def broken_save(obj, stream):  # noqa: ANN001
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["value"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_unreadable_files_are_named_in_the_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        read_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(ValueError, match="foreign.pt: not a cgat-dgl checkpoint"):
        read_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")


def test_weights_of_another_model_are_named_in_the_error(tmp_path: Path) -> None:
    state = read_checkpoint(pretrained_checkpoint())
    state["model_state"] = {k: v for k, v in state["model_state"].items() if not k.startswith("head.")}
    path = save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="cut.pt: the checkpoint's weights do not fit the model"):
        load_checkpoint(path)


def test_rng_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    path = save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(read_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
