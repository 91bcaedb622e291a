"""Learning-rate schedules, stepped once per epoch, and the early-stopping rule.

- ``triangular``: the paper's cyclical rate (lr x base factor at a cycle's start and end, lr x max
  factor at mid-period); it never anneals for good, so it is what the ``paper`` profile reproduces.
- ``cosine``: a linear warm-up, then a half cosine from lr to ``min_lr_factor`` x lr at the epoch cap,
  or at ``anneal_epochs`` and held there, so that a run can end on a plateau of its annealed model.
- ``plateau``: a linear warm-up, then lr held until the validation MAE stops improving by
  ``min_delta`` (relative) for ``lr_patience`` epochs, when it is multiplied by ``lr_decay``.

Every schedule scales each parameter group's own rate (groups may carry an ``lr_factor``), and its
state is a plain dict, so a resumed run continues the same schedule.

``EarlyStopping`` ends a run whose validation MAE has not improved by ``min_delta`` (relative to the
best so far) for ``patience`` epochs: such a run stopped on a plateau and counts as converged; a run
that reaches its epoch cap first did not. A cosine run with ``anneal_epochs`` does not stop before its
anneal has ended: at a high rate the validation MAE is noisy enough to stall for ``patience`` epochs
long before the model it would anneal to has been reached.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import CyclicLR

from .config import TrainConfig

StopReason = Literal["plateau", "cap"]


def improves(value: float, reference: float, min_delta: float) -> bool:
    """Whether ``value`` beats ``reference`` by more than the relative margin ``min_delta``."""
    return value < reference * (1.0 - min_delta)


class EpochSchedule:
    """Sets every group's rate to its base rate times ``scale(epoch)`` at the start of each epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.config = config
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.epoch = 0  # epochs completed
        self._apply()

    def warmup_scale(self) -> float | None:
        """The warm-up factor of the coming epoch, or None after the warm-up."""
        warmup = self.config.warmup_epochs
        if self.epoch < warmup:
            return (self.epoch + 1) / (warmup + 1)
        return None

    def scale(self) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        factor = self.scale()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self, val_mae: float) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self._apply()


class CosineSchedule(EpochSchedule):
    def scale(self) -> float:
        warm = self.warmup_scale()
        if warm is not None:
            return warm
        span = max(1, self.config.anneal_span - self.config.warmup_epochs)
        progress = min(1.0, (self.epoch - self.config.warmup_epochs) / span)
        floor = self.config.min_lr_factor
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PlateauSchedule(EpochSchedule):
    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.level = 1.0
        self.best = math.inf
        self.bad_epochs = 0
        super().__init__(optimizer, config)

    def scale(self) -> float:
        warm = self.warmup_scale()
        return warm if warm is not None else self.level

    def step(self, val_mae: float) -> None:
        config = self.config
        if self.epoch >= config.warmup_epochs:  # the warm-up's epochs do not count towards a plateau
            if improves(val_mae, self.best, config.min_delta):
                self.best, self.bad_epochs = val_mae, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= config.lr_patience:
                    self.level = max(self.level * config.lr_decay, config.min_lr_factor)
                    self.bad_epochs = 0
        super().step(val_mae)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "level": self.level, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level, self.best, self.bad_epochs = float(state["level"]), float(state["best"]), int(state["bad_epochs"])
        super().load_state_dict(state)


class TriangularSchedule:
    """The paper's triangular cycle (torch's CyclicLR stepped per epoch), behind the same interface."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        group_lrs = [group["lr"] for group in optimizer.param_groups]
        self.cycle = CyclicLR(
            optimizer,
            base_lr=[lr * config.cycle_base_factor for lr in group_lrs],
            max_lr=[lr * config.cycle_max_factor for lr in group_lrs],
            step_size_up=config.cycle_period / 2,  # type: ignore[arg-type]  # a float allows odd periods
            mode="triangular",
            cycle_momentum=False,
        )

    def step(self, val_mae: float) -> None:
        self.cycle.step()

    def state_dict(self) -> dict[str, Any]:
        return self.cycle.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cycle.load_state_dict(state)


Schedule = TriangularSchedule | CosineSchedule | PlateauSchedule
SCHEDULES: dict[str, type[Schedule]] = {
    "triangular": TriangularSchedule,
    "cosine": CosineSchedule,
    "plateau": PlateauSchedule,
}


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Schedule:
    return SCHEDULES[config.schedule](optimizer, config)


class EarlyStopping:
    """Counts the epochs since the validation MAE last improved by ``min_delta`` (relative)."""

    def __init__(self, patience: int | None, min_delta: float, earliest: int = 0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.earliest = earliest  # the epochs a run completes before a plateau may stop it
        self.reference = math.inf  # the last validation MAE that counted as an improvement
        self.bad_epochs = 0
        self.epochs = 0

    def update(self, val_mae: float) -> bool:
        """Record an epoch; True when the run has plateaued and should stop."""
        self.epochs += 1
        if improves(val_mae, self.reference, self.min_delta):
            self.reference, self.bad_epochs = val_mae, 0
        else:
            self.bad_epochs += 1
        return self.plateaued

    @property
    def plateaued(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience and self.epochs >= self.earliest


def earliest_stop(config: TrainConfig) -> int:
    """The epochs a run completes before a plateau may stop it: a cosine run's warm-up and anneal."""
    if config.schedule == "cosine" and config.anneal_epochs is not None:
        return config.anneal_epochs
    return 0


def replay_stopping(history: list[dict[str, float]], config: TrainConfig) -> EarlyStopping:
    """The stopping state after the epochs of ``history``: a resumed run recomputes it, so a changed
    patience or margin applies to the epochs already run."""
    stopper = EarlyStopping(config.patience, config.min_delta, earliest_stop(config))
    for row in history:
        stopper.update(float(row["val_mae"]))
    return stopper
