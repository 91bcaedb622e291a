"""Training configuration: optimiser, cyclical schedule, device, and the transfer options."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cgat_dgl.strategies import known_strategy

# A strategy of the registry (cgat_dgl.strategies), looked up when a configuration is validated.
Strategy = Annotated[str, AfterValidator(known_strategy)]
Normalization = Literal["keep", "refit"]
ScheduleName = Literal["triangular", "cosine", "plateau"]  # cgat_dgl.training.schedules


# The paper's runs (section IV.B): 390 pre-training epochs in 3 triangular cycles of 130, 280 transfer
# epochs in 4 cycles of 70. A run of other length keeps the number of cycles.
PAPER_EPOCHS = {"pretrain": 390, "transfer": 280}
PAPER_CYCLES = {"pretrain": 3, "transfer": 4}


def paper_cycle_period(epochs: int, stage: Literal["pretrain", "transfer"]) -> int:
    """The paper's cycle length for a run of ``epochs`` (at least 2: a rise and a fall)."""
    return max(2, round(epochs / PAPER_CYCLES[stage]))


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(PAPER_EPOCHS["pretrain"], ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1.25e-4, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    # Triangular cycle, stepped once per epoch: lr * base factor at the cycle start and end,
    # lr * max factor at mid-period (the reference: 0.1 and 1.0, period 130, 70 for transfer).
    cycle_period: int = Field(paper_cycle_period(PAPER_EPOCHS["pretrain"], "pretrain"), ge=1)
    cycle_base_factor: float = Field(0.1, gt=0)
    cycle_max_factor: float = Field(1.0, gt=0)
    # The learning-rate schedule (cgat_dgl.training.schedules): the paper's triangular cycle, or one that
    # anneals: warm-up then cosine to the epoch cap, or warm-up then decay on a validation plateau.
    schedule: ScheduleName = "triangular"
    warmup_epochs: int = Field(0, ge=0)
    min_lr_factor: float = Field(0.01, gt=0, le=1)  # cosine's end and plateau's floor, times lr
    # cosine: the epochs of warm-up plus anneal, after which the rate holds at its floor until a
    # plateau or the cap ends the run (a plateau cannot end it sooner); None: anneal to the cap.
    anneal_epochs: int | None = Field(None, ge=1)
    lr_patience: int = Field(3, ge=1)  # plateau: epochs without improvement before the rate decays
    lr_decay: float = Field(0.5, gt=0, lt=1)
    # Early stopping: stop after `patience` epochs whose validation MAE does not beat the best by the
    # relative margin `min_delta` (a plateau); `epochs` is the cap. None: always run to the cap.
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0, lt=1)
    loss: Literal["l1", "robust_l1"] = "l1"
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = "auto"
    amp: bool = False  # mixed precision, honoured on GPU only
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    num_workers: int = Field(0, ge=0)
    # Torch intra-op threads for the run (results depend on it: reductions split differently);
    # None keeps the process's setting.
    threads: int | None = Field(None, ge=1)
    # Message-passing backend for collation and the model; None keeps the model config's.
    backend: Literal["dgl", "torch"] | None = None
    drop_last: bool = False  # training batches only; evaluation never drops
    strategy: Strategy = "none"
    freeze: list[str] = Field(default_factory=list)
    lr_factors: dict[str, float] = Field(default_factory=dict)
    normalization: Normalization = "keep"
    # Each training epoch draws at least this many structures: a smaller training set is passed over
    # ceil(epoch_structures / its size) times, so that validation, rate decay and early stopping come
    # after as many optimiser steps whatever the set's size. None: one pass.
    epoch_structures: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(0, ge=0)  # also keep epoch_<n>.pt every n epochs; 0 = only best and last
    eval_batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        bad = {name: f for name, f in self.lr_factors.items() if not f > 0}
        if bad:
            raise ValueError(f"lr_factors must be positive, got {bad}")
        if self.cycle_base_factor > self.cycle_max_factor:
            raise ValueError("cycle_base_factor must not exceed cycle_max_factor")
        if self.anneal_epochs is not None and self.anneal_epochs > self.epochs:
            raise ValueError(f"anneal_epochs ({self.anneal_epochs}) must not exceed epochs ({self.epochs})")
        if self.anneal_epochs is not None and self.anneal_epochs <= self.warmup_epochs:
            raise ValueError(f"anneal_epochs ({self.anneal_epochs}) must exceed warmup_epochs ({self.warmup_epochs})")
        if self.schedule == "plateau" and self.patience is not None and self.lr_patience >= self.patience:
            raise ValueError(f"lr_patience ({self.lr_patience}) must be below patience ({self.patience}), "
                             "or the run stops before its rate ever decays")
        return self

    @property
    def anneal_span(self) -> int:
        """The epochs over which cosine warms up and anneals (the cap unless anneal_epochs is set)."""
        return self.anneal_epochs if self.anneal_epochs is not None else self.epochs

    @classmethod
    def transfer(cls, **overrides: object) -> "TrainConfig":
        """The reference transfer settings (the paper's transfer cycle), with overrides."""
        values: dict[str, object] = {
            "cycle_period": paper_cycle_period(PAPER_EPOCHS["transfer"], "transfer"), "strategy": "full"
        }
        values.update(overrides)
        return cls(**values)


def train_config(settings: Mapping[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """The one way from settings to a training run's config, for every front end (``cgat train``, the
    benchmark runner, Optuna trials): a stage's settings (a manifest profile's, a checkpoint's), then
    ``overrides`` (a command line's, a trial's); None stands for "not given", so every default is
    TrainConfig's own. The result is validated, whatever changed."""
    values = {**(settings or {}), **overrides}
    return TrainConfig(**{name: value for name, value in values.items() if value is not None})
