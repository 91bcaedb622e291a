"""What each strategy trains on: its datasets, the weights it starts from and, for delta learning,
the baseline its corrections are added to.

- none: the target training subset, from scratch.
- head, full: the same subset, from the pre-trained source model (cgat_dgl.training.transfer).
- delta: the subset's ``target - source model prediction``, from the pre-trained model.
- delta_known: the subset's ``target - known source value``, from the pre-trained model; it can
  only predict materials whose source value is known.
- multifidelity: the source pool (the pre-training run's training set, which holds no validation or
  test material of the target) and the target subset at once, from scratch, with fidelity indices.
- multifidelity_ft: the target subset alone, from the multifidelity run of the same size and seed.
Every strategy is scored on the same validation and test materials of the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import TaskData
from benchmarks.plan import PretrainRun, TransferRun
from cgat_dgl.strategies import strategy
from cgat_dgl.data.dataset import GraphDataset
from cgat_dgl.training.checkpoint import read_checkpoint
from cgat_dgl.training.delta import add_back, known_baseline, model_baseline, residual_dataset
from cgat_dgl.training.multifidelity import TARGET, FidelityDataset, JointTrainingSet, check_no_evaluation_material
from cgat_dgl.training.run_state import BEST_NAME, LAST_NAME
from cgat_dgl.training.trainer import ToTargetUnits


@dataclass
class RunInputs:
    train_set: Any
    val_set: Any
    test_set: Any
    target_test: GraphDataset  # the test set in target units (delta trains on corrections)
    target_train_size: int  # structures of the target (not source) fidelity it trains on
    init_checkpoint: Path | None = None
    init_run: PretrainRun | TransferRun | None = None  # the run whose weights it starts from
    to_target_units: ToTargetUnits | None = None  # a correction model's: its baseline added back
    source_structures: int = 0  # the source pool: pre-training set, or the joint run's source pool
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def checkpoint_of(work_dir: Path, spec: PretrainRun | TransferRun, name: str = BEST_NAME) -> Path:
    path = work_dir / "checkpoints" / spec.key / name
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint of {spec.label} missing: {path}")
    return path


def trained_structures(work_dir: Path, spec: PretrainRun | TransferRun) -> int:
    """The structures a finished run trained on, from its last checkpoint's history (a shipped
    pre-trained model has only its best checkpoint, which holds the whole history)."""
    name = LAST_NAME if (work_dir / "checkpoints" / spec.key / LAST_NAME).is_file() else BEST_NAME
    history = read_checkpoint(checkpoint_of(work_dir, spec, name))["history"]
    return int(sum(row.get("structures", 0) for row in history))


def pretrain_inputs(spec: PretrainRun, data: TaskData) -> RunInputs:
    """A pre-training's pool and its whole validation and test splits: a pre-trained model is chosen,
    stopped and reported on every material it may be judged on, not a capped sample."""
    train_set, val_set, test_set = data.pretrain_sets(spec.prop, spec.size, spec.cap, None)
    return RunInputs(
        train_set, val_set, test_set, target_test=test_set, target_train_size=len(train_set),
        source_structures=len(train_set),
    )  # fmt: skip


def transfer_inputs(spec: TransferRun, data: TaskData, work_dir: Path) -> RunInputs:
    train_set, val_set, test_set = data.transfer_sets(
        spec.target, spec.train_size, spec.cap, spec.eval_cap, subset_seed=spec.seed, above=spec.target_above
    )
    inputs = RunInputs(train_set, val_set, test_set, target_test=test_set, target_train_size=len(train_set))
    source = spec.source_data
    if source is not None:
        inputs.source_structures = data.resolved_pretrain_size(source)
    entry = strategy(spec.strategy)
    if entry.from_pretrained:
        assert spec.pretrain is not None
        inputs.init_run = spec.pretrain
        inputs.init_checkpoint = checkpoint_of(work_dir, spec.pretrain)
    elif entry.starts_from == "joint":
        assert spec.joint is not None
        inputs.init_run = spec.joint
        inputs.init_checkpoint = checkpoint_of(work_dir, spec.joint)
    if entry.learns == "model_residual":
        assert inputs.init_checkpoint is not None
        baseline = model_baseline(inputs.init_checkpoint, [train_set, val_set, test_set], backend=spec.stage["backend"])
        _as_corrections(inputs, baseline, "source model")
    elif entry.learns == "known_residual":
        ids = [*train_set.ids, *val_set.ids, *test_set.ids]
        _as_corrections(inputs, known_baseline(data.loaded.targets[spec.source], ids, spec.source), f"known {spec.source}")
    if entry.source_pool:
        assert spec.source_pool is not None and spec.source_ratio is not None
        pool = data.pretrain_sets(spec.source, spec.source_pool.size, spec.source_pool.cap, spec.eval_cap)[0]
        joint = JointTrainingSet(pool, train_set, spec.source_ratio)
        check_no_evaluation_material(joint.ids, {"validation": val_set.ids, "test": test_set.ids})
        inputs.train_set = joint
        inputs.params = {"source_ratio": spec.source_ratio, "source_per_epoch": joint.source_per_epoch}
    if entry.multifidelity:
        # the joint model's own run trains on both fidelities; the runs that start from it, on the target's
        _at_target_fidelity(inputs, train=not entry.source_pool)
    return inputs


def _as_corrections(inputs: RunInputs, baseline: dict[str, float], name: str) -> None:
    inputs.to_target_units = add_back(baseline)
    inputs.train_set = residual_dataset(inputs.train_set, baseline)
    inputs.val_set = residual_dataset(inputs.val_set, baseline)
    inputs.test_set = residual_dataset(inputs.test_set, baseline)
    # cgat predict on this checkpoint gives the correction, to be added to this baseline
    inputs.metadata["delta_baseline"] = name


def _at_target_fidelity(inputs: RunInputs, train: bool) -> None:
    if train:
        inputs.train_set = FidelityDataset(inputs.train_set, TARGET)
    inputs.val_set = FidelityDataset(inputs.val_set, TARGET)
    inputs.test_set = FidelityDataset(inputs.test_set, TARGET)
