"""Checkpoint files: weights-only loading, round trips that predict the same values, atomic writes."""

from __future__ import annotations

import random
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.training.checkpoint import (
    CHECKSUM,
    FORMAT,
    DamagedCheckpointError,
    capture_rng_state,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from cgat_dgl.training.inference import load_checkpoint, predict
from cgat_dgl.training.normalization import Normalizer
from cgat_dgl.training.run_state import BEST_NAME, LAST_NAME
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
    with pytest.raises(DamagedCheckpointError, match="garbage.pt: damaged checkpoint: not readable"):
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


# --- checksums: damage is found and named ------------------------------------------------------------------


def resumable_state() -> dict:
    """What the trainer's last.pt holds: weights, optimizer moments, scheduler, scaler, RNG, history."""
    torch.manual_seed(3)
    model = CGAT(SMOKE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    return {
        "model_state": model.state_dict(),
        "model_config": SMOKE.model_dump(mode="json"),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": capture_rng_state(),
        "epoch": 3,
        "best_val_mae": 0.125,
        "history": [{"epoch": 1, "val_mae": float("nan")}, {"epoch": 2, "val_mae": 0.2}],
        "metadata": {"property": "e_form_pbe", "ids": ("a", "b")},
    }


def record_bytes(path: Path, largest_tensor: bool = True) -> tuple[int, int]:
    """(start, size) in a torch zip checkpoint of its largest tensor's bytes, or of its pickle."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if largest_tensor:
            info = max((i for i in infos if "/data/" in i.filename), key=lambda i: i.file_size)
        else:
            [info] = [i for i in infos if i.filename.endswith("/data.pkl")]
    with open(path, "rb") as stream:
        stream.seek(info.header_offset)
        header = stream.read(30)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def overwrite(path: Path, at: int, count: int = 14) -> None:
    content = bytearray(path.read_bytes())
    content[at : at + count] = bytes(255 - b for b in content[at : at + count])
    path.write_bytes(bytes(content))


def test_a_checkpoint_round_trips_with_its_checksum(tmp_path: Path) -> None:
    state = resumable_state()
    path = save_checkpoint(state, tmp_path / "last.pt")
    raw = torch.load(path, weights_only=True)
    assert raw[CHECKSUM].startswith("sha256:") and len(raw[CHECKSUM]) == len("sha256:") + 64
    loaded = read_checkpoint(path)
    assert CHECKSUM not in loaded and loaded["epoch"] == 3 and loaded["metadata"]["ids"] == ("a", "b")
    for name, tensor in state["model_state"].items():
        assert torch.equal(loaded["model_state"][name], tensor)
    # Saved again (as the trainer and tests do with a state they read), it verifies again.
    read_checkpoint(save_checkpoint(loaded, tmp_path / "again.pt"))


def test_training_checkpoints_carry_a_verified_checksum() -> None:
    folder = pretrained_checkpoint().parent
    for name in (BEST_NAME, LAST_NAME):
        assert CHECKSUM in torch.load(folder / name, weights_only=True)
        assert CHECKSUM not in read_checkpoint(folder / name)


def test_bytes_overwritten_inside_the_weights_raise_damaged_checkpoint_error(tmp_path: Path) -> None:
    path = save_checkpoint(resumable_state(), tmp_path / "last.pt")
    start, size = record_bytes(path)
    overwrite(path, start + size // 2)
    assert torch.load(path, weights_only=True)["epoch"] == 3  # torch itself notices nothing
    with pytest.raises(DamagedCheckpointError, match=r"last\.pt: damaged checkpoint: checksum mismatch") as caught:
        read_checkpoint(path)
    assert caught.value.path == path and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_bytes_overwritten_in_the_pickle_raise_damaged_checkpoint_error(tmp_path: Path, where: float) -> None:
    # The pickle holds the keys, numbers and history, and says which stored bytes make which tensor.
    # (Bytes of the zip's alignment padding, by contrast, change nothing that loads, and pass.)
    path = save_checkpoint(resumable_state(), tmp_path / "last.pt")
    start, size = record_bytes(path, largest_tensor=False)
    overwrite(path, start + int(size * where))
    with pytest.raises(DamagedCheckpointError, match=rf"^{path}: damaged checkpoint: "):
        read_checkpoint(path)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_truncated_checkpoints_raise_damaged_checkpoint_error(tmp_path: Path, keep: float) -> None:
    path = save_checkpoint(resumable_state(), tmp_path / "last.pt")
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(DamagedCheckpointError, match=rf"^{path}: damaged checkpoint: not readable"):
        read_checkpoint(path)


def test_checkpoints_without_a_checksum_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "epoch": 4, "value": torch.ones(2)}, path)  # as written before checksums
    state = read_checkpoint(path)
    assert state["epoch"] == 4 and torch.equal(state["value"], torch.ones(2))


def test_a_damaged_last_checkpoint_restarts_the_run_with_a_warning_on_it(tmp_path: Path) -> None:
    from cgat_dgl.training.config import TrainConfig
    from cgat_dgl.training.tracking import Tracker
    from cgat_dgl.training.trainer import train

    train_set, val_set, test_set = three_sets(24)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, cycle_period=2, device="cpu", seed=3)
    out = tmp_path / "run"
    first = train(SMOKE, config, train_set, val_set, test_set, out_dir=out)
    last = out / LAST_NAME
    data = bytearray(last.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 14] = b"\x00" * 14
    last.write_bytes(bytes(data))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracker("damaged", tracking_uri=uri) as tracker:
        again = train(SMOKE, config, train_set, val_set, test_set, out_dir=out, tracker=tracker, resume=True)
        run_id = tracker.run_id
    assert (out / (LAST_NAME + ".damaged")).is_file()
    read_checkpoint(last)  # the fresh start wrote an intact one
    assert [row["epoch"] for row in again.history] == [0, 1]  # every epoch trained again, none resumed
    assert again.test == pytest.approx(first.test)  # the same seed from scratch: the same run
    from mlflow.tracking import MlflowClient

    warning = MlflowClient(uri).get_run(run_id).data.tags["cgat.resume_warning"]
    assert "damaged checkpoint" in warning and "started afresh" in warning
