"""Transfer strategies: which module groups train, at which learning rate, from which weights.

The strategies are sugar over a freeze list of the model's module groups
(``embedding``, ``message_passing``, ``roost``, ``pooling``, ``head``):
``none`` trains every weight from scratch, ``head`` loads a checkpoint and trains only the residual
output network, ``full`` loads a checkpoint and continues every weight; the delta and multi-fidelity strategies
train like ``none`` or ``full`` on other data (``cgat_dgl.training.delta``, ``.multifidelity``). Frozen parameters get
``requires_grad=False``, stay out of the optimiser, and their modules stay in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from cgat_dgl.strategies import strategy

from .checkpoint import load_model_state, read_checkpoint
from .config import TrainConfig

HEAD_GROUP = "head"
OTHER_GROUP = "other"  # parameters outside every named group (none in a well-grouped model)
# Fields that change how the model computes, not which weights it has.
# How the model computes, not what it computes: a checkpoint of either implementation and backend loads
# into the other (the fast implementation holds the plain one's parameters).
_COMPUTE_ONLY_FIELDS = {"backend", "implementation"}
# Model fields added after checkpoints were first written, with the value an older checkpoint means.
_ADDED_FIELDS = {"n_fidelities": 0}


def named_groups(model: nn.Module) -> dict[str, nn.Module]:
    """The model's module groups, plus ``other`` for any parameter none of them holds."""
    groups: dict[str, nn.Module] = dict(model.module_groups())  # type: ignore[operator]
    grouped = {id(p) for module in groups.values() for p in module.parameters()}
    leftover = [(name, p) for name, p in model.named_parameters() if id(p) not in grouped]
    if leftover:
        holder = nn.Module()
        holder._leftover = nn.ParameterList([p for _, p in leftover])  # shares the tensors, copies nothing
        groups[OTHER_GROUP] = holder
    return groups


def frozen_group_names(train_config: TrainConfig, available: list[str]) -> list[str]:
    unknown = sorted(set(train_config.freeze) - set(available))
    if unknown:
        raise ValueError(f"unknown module group(s) to freeze: {unknown}; the model has {available}")
    frozen = set(train_config.freeze)
    if strategy(train_config.strategy).head_only:
        if HEAD_GROUP not in available:
            raise ValueError(f"strategy 'head' needs a '{HEAD_GROUP}' module group; the model has {available}")
        frozen |= {name for name in available if name != HEAD_GROUP}
    if frozen >= set(available):
        raise ValueError(f"every module group is frozen ({sorted(frozen)}): nothing would train")
    return [name for name in available if name in frozen]


@dataclass
class FreezePlan:
    groups: dict[str, nn.Module]
    frozen: list[str]
    n_trainable: int
    n_frozen: int

    @property
    def trainable(self) -> list[str]:
        return [name for name in self.groups if name not in self.frozen]

    def set_train_mode(self, model: nn.Module) -> None:
        """Train mode everywhere except frozen groups, whose dropout/batch norm must not change behaviour."""
        model.train()
        for name in self.frozen:
            self.groups[name].eval()


def apply_freeze(model: nn.Module, train_config: TrainConfig) -> FreezePlan:
    groups = named_groups(model)
    frozen = frozen_group_names(train_config, list(groups))
    for name, module in groups.items():
        for parameter in module.parameters():
            parameter.requires_grad_(name not in frozen)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return FreezePlan(groups=groups, frozen=frozen, n_trainable=n_trainable, n_frozen=n_frozen)


def param_groups(plan: FreezePlan, train_config: TrainConfig) -> list[dict[str, Any]]:
    """One optimiser parameter group per trainable module group, with its learning-rate factor."""
    misplaced = sorted(set(train_config.lr_factors) - set(plan.groups))
    if misplaced:
        raise ValueError(f"lr_factors name unknown module group(s) {misplaced}; the model has {list(plan.groups)}")
    frozen_with_factor = sorted(set(train_config.lr_factors) & set(plan.frozen))
    if frozen_with_factor:
        raise ValueError(f"lr_factors given for frozen group(s) {frozen_with_factor}")
    result = []
    for name in plan.trainable:
        params = [p for p in plan.groups[name].parameters() if p.requires_grad]
        if params:
            factor = train_config.lr_factors.get(name, 1.0)
            result.append({"params": params, "name": name, "lr": train_config.lr * factor, "lr_factor": factor})
    return result


def config_differences(saved: dict[str, Any], requested: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    saved = {**_ADDED_FIELDS, **saved}
    keys = (set(saved) | set(requested)) - _COMPUTE_ONLY_FIELDS
    return {k: (saved.get(k), requested.get(k)) for k in sorted(keys) if saved.get(k) != requested.get(k)}


def check_same_architecture(saved: dict[str, Any], requested: dict[str, Any], source: Path | str) -> None:
    differences = config_differences(saved, requested)
    if differences:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in differences.items())
        raise ValueError(f"{source}: the checkpoint's model config differs from the requested one ({listed})")


def load_pretrained(model: nn.Module, path: Path | str, requested_config: dict[str, Any]) -> dict[str, Any]:
    """Load every weight of a pre-trained checkpoint into ``model``; return the checkpoint dict."""
    state = read_checkpoint(path)
    check_same_architecture(state["model_config"], requested_config, path)
    load_model_state(model, state["model_state"], path)
    return state
