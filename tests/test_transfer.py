"""Transfer strategies on real crystals: what trains, what stays frozen, and the normalisation used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cgat_dgl.graphs.collate import collate
from cgat_dgl.model import CGAT, ModelConfig
from cgat_dgl.training import frozen_body
from cgat_dgl.training.checkpoint import read_checkpoint
from cgat_dgl.training.config import TrainConfig
from cgat_dgl.training.inference import load_checkpoint
from cgat_dgl.training.transfer import apply_freeze, param_groups
from cgat_dgl.training.trainer import train
from tests.training_fixtures import pretrained_checkpoint, single_thread, three_sets  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

SMOKE = ModelConfig.preset("smoke")
GROUPS = ["embedding", "message_passing", "roost", "pooling", "head"]


def transfer_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {"epochs": 2, "batch_size": 6, "lr": 3e-3, "cycle_period": 4, "device": "cpu"}
    values.update(overrides)
    return TrainConfig.transfer(**values)


@pytest.fixture(scope="module")
def target_sets():
    return three_sets(24, "gap_pbe")


def group_of(name: str) -> str:
    return name.split(".", 1)[0]


def parameter_names() -> set[str]:
    return {name for name, _ in CGAT(SMOKE).named_parameters()}


def changed_parameters(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {name for name in parameter_names() if not torch.equal(before[name], after[name])}


def initial_gradients(checkpoint: Path, dataset) -> dict[str, float]:
    """Largest |gradient| of each parameter for the L1 loss on the whole set at the pre-trained weights."""
    model, normalizer, _ = load_checkpoint(checkpoint)
    model.train()
    batch = collate([dataset[i] for i in range(len(dataset))], "dgl")
    loss = (model(batch)[:, 0] - normalizer.encode(batch.targets)).abs().mean()
    loss.backward()
    return {n: (0.0 if p.grad is None else float(p.grad.abs().max())) for n, p in model.named_parameters()}


def test_head_strategy_changes_only_head_parameters(target_sets, tmp_path: Path) -> None:
    checkpoint = pretrained_checkpoint()
    result = train(SMOKE, transfer_config(strategy="head"), *target_sets, out_dir=tmp_path, init_checkpoint=checkpoint)
    before = read_checkpoint(checkpoint)["model_state"]
    after = read_checkpoint(tmp_path / "last.pt")["model_state"]
    changed = changed_parameters(before, after)
    head = {name for name in parameter_names() if group_of(name) == "head"}
    assert changed == head
    assert result.frozen_groups == ["embedding", "message_passing", "roost", "pooling"]
    head_size = sum(p.numel() for p in CGAT(SMOKE).head.parameters())
    total = sum(p.numel() for p in CGAT(SMOKE).parameters())
    assert (result.n_trainable, result.n_frozen) == (head_size, total - head_size)


def test_head_on_crystal_features_trains_the_model_that_running_the_body_every_epoch_trains(
    target_sets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = pretrained_checkpoint()
    config = transfer_config(strategy="head", epochs=4)
    computed: list[int] = []
    compute = frozen_body.crystal_features
    monkeypatch.setattr(frozen_body, "crystal_features", lambda *a: computed.append(1) or compute(*a))
    cached = train(SMOKE, config, *target_sets, out_dir=tmp_path / "cached", init_checkpoint=checkpoint)
    assert len(computed) == 3  # train, validation and test sets, once each
    monkeypatch.setattr(frozen_body, "applies", lambda *args: False)
    body = train(SMOKE, config, *target_sets, out_dir=tmp_path / "body", init_checkpoint=checkpoint)
    cached_state = read_checkpoint(tmp_path / "cached" / "last.pt")["model_state"]
    body_state = read_checkpoint(tmp_path / "body" / "last.pt")["model_state"]
    # the same sums, batched differently: equal to float32 rounding
    for name, value in body_state.items():
        torch.testing.assert_close(cached_state[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert [row["val_mae"] for row in cached.history] == pytest.approx([row["val_mae"] for row in body.history], rel=1e-4)
    assert cached.test["mae"] == pytest.approx(body.test["mae"], rel=1e-4)
    assert cached.best_epoch == body.best_epoch


def test_full_strategy_changes_every_parameter_that_gets_a_gradient(target_sets, tmp_path: Path) -> None:
    checkpoint = pretrained_checkpoint()
    result = train(SMOKE, transfer_config(strategy="full"), *target_sets, out_dir=tmp_path, init_checkpoint=checkpoint)
    assert result.n_frozen == 0 and result.frozen_groups == []
    before = read_checkpoint(checkpoint)["model_state"]
    after = read_checkpoint(tmp_path / "last.pt")["model_state"]
    changed = changed_parameters(before, after)
    assert {group_of(name) for name in changed} >= {"embedding", "message_passing", "pooling", "head"}
    # A parameter may stay put only where the loss does not depend on it (e.g. the last step's edge
    # update, whose output no later layer reads); nothing with a real gradient is held back.
    gradients = initial_gradients(checkpoint, target_sets[0])
    unchanged = parameter_names() - changed
    assert all(gradients[name] < 1e-6 for name in unchanged), {n: gradients[n] for n in unchanged}
    assert len(changed) > 0.75 * len(parameter_names())


def test_frozen_groups_stay_in_eval_mode() -> None:
    model = CGAT(SMOKE)
    plan = apply_freeze(model, TrainConfig(strategy="head"))
    plan.set_train_mode(model)
    assert model.head.training
    for name in ["embedding", "message_passing", "roost", "pooling"]:
        module = getattr(model, name)
        assert not any(m.training for m in module.modules()), name
        assert not any(p.requires_grad for p in module.parameters()), name
    assert all(p.requires_grad for p in model.head.parameters())


def test_freeze_list_and_lr_factors_make_the_param_groups() -> None:
    model = CGAT(SMOKE)
    config = TrainConfig(strategy="full", freeze=["roost"], lr_factors={"head": 10.0, "embedding": 0.5}, lr=1e-3)
    plan = apply_freeze(model, config)
    groups = param_groups(plan, config)
    assert [g["name"] for g in groups] == ["embedding", "message_passing", "pooling", "head"]
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx(
        {"embedding": 5e-4, "message_passing": 1e-3, "pooling": 1e-3, "head": 1e-2}
    )
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) not in in_groups and not p.requires_grad for p in model.roost.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == plan.n_trainable
    assert plan.n_frozen == sum(p.numel() for p in model.roost.parameters())
    assert plan.n_trainable + plan.n_frozen == sum(p.numel() for p in model.parameters())


def test_bad_freeze_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown module group"):
        apply_freeze(CGAT(SMOKE), TrainConfig(freeze=["decoder"]))
    with pytest.raises(ValueError, match="nothing would train"):
        apply_freeze(CGAT(SMOKE), TrainConfig(freeze=GROUPS))
    model = CGAT(SMOKE)
    config = TrainConfig(strategy="head", lr_factors={"pooling": 2.0})
    with pytest.raises(ValueError, match="frozen"):
        param_groups(apply_freeze(model, config), config)
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(lr_factors={"head": 0.0})


def test_normalization_keep_and_refit(target_sets, tmp_path: Path) -> None:
    checkpoint = pretrained_checkpoint()
    pretrained = read_checkpoint(checkpoint)["normalization"]
    kept = train(SMOKE, transfer_config(epochs=1, normalization="keep"), *target_sets,
                 out_dir=tmp_path / "keep", init_checkpoint=checkpoint)  # fmt: skip
    refit = train(SMOKE, transfer_config(epochs=1, normalization="refit"), *target_sets,
                  out_dir=tmp_path / "refit", init_checkpoint=checkpoint)  # fmt: skip
    targets = target_sets[0].targets.astype(np.float64)
    assert kept.normalization == pytest.approx(pretrained)
    assert refit.normalization == pytest.approx({"mean": targets.mean(), "std": targets.std()}, rel=1e-5)
    assert refit.normalization["mean"] != pytest.approx(pretrained["mean"], rel=1e-2)
    assert read_checkpoint(kept.checkpoint)["normalization"] == pytest.approx(pretrained)


def test_transfer_starts_a_fresh_schedule_and_epoch_count(target_sets, tmp_path: Path) -> None:
    result = train(SMOKE, transfer_config(epochs=1), *target_sets, out_dir=tmp_path,
                   init_checkpoint=pretrained_checkpoint())  # fmt: skip
    assert [row["epoch"] for row in result.history] == [0]
    assert result.history[0]["lr"] == pytest.approx(0.1 * 3e-3)
    assert read_checkpoint(tmp_path / "last.pt")["metadata"]["init_checkpoint"] == str(pretrained_checkpoint())


def test_a_checkpoint_of_another_architecture_is_refused(target_sets, tmp_path: Path) -> None:
    wider = ModelConfig.preset("smoke", atom_fea_len=12)
    with pytest.raises(ValueError, match="atom_fea_len: checkpoint 8 vs requested 12"):
        train(wider, transfer_config(), *target_sets, out_dir=tmp_path, init_checkpoint=pretrained_checkpoint())
    # The backend only changes how messages are computed: its checkpoint loads.
    torch_backend = SMOKE.model_copy(update={"backend": "torch"})
    result = train(torch_backend, transfer_config(epochs=1), *target_sets, out_dir=tmp_path / "torch",
                   init_checkpoint=pretrained_checkpoint())  # fmt: skip
    assert np.isfinite(result.test["mae"])


def test_a_checkpoint_runs_with_either_implementation_and_backend(target_sets, tmp_path: Path) -> None:
    from cgat_dgl.training.inference import load_checkpoint, predict_with_targets

    _, _, test_set = target_sets
    predictions = {}
    for implementation, backend in (("plain", "dgl"), ("fast", "dgl"), ("fast", "torch")):
        model, normalizer, _ = load_checkpoint(pretrained_checkpoint(), backend=backend, implementation=implementation)
        assert model.config.implementation == implementation
        predicted, _, _ = predict_with_targets(model, normalizer, test_set, 16, backend=backend)
        predictions[(implementation, backend)] = np.asarray(predicted)
    reference = predictions[("plain", "dgl")]
    for found in predictions.values():
        assert found == pytest.approx(reference, abs=1e-5)
    # and transfers start from it in the other implementation
    plain = SMOKE.model_copy(update={"implementation": "plain", "backend": "dgl"})
    result = train(plain, transfer_config(epochs=1), *target_sets, out_dir=tmp_path, init_checkpoint=pretrained_checkpoint())
    assert np.isfinite(result.test["mae"])
