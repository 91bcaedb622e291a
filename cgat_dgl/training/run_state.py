"""A training run's state and its checkpoints: what the run is (model, normaliser, freeze plan,
optimiser, schedule), what it has learnt (epoch, best epoch, history), and how it is saved to
``last.pt`` / ``best.pt`` and restored, refusing a folder made for other data or settings.

Every epoch writes ``last.pt`` (weights, optimiser, scheduler, RNG states, history) so that a killed
run continues to the same result as an uninterrupted one; the global RNG states are restored on
resume, which is what makes the continuation exact on CPU.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model import CGAT, ModelConfig
from . import distributed
from .checkpoint import DamagedCheckpointError, capture_rng_state, load_model_state, read_checkpoint, restore_rng_state, save_checkpoint
from .config import TrainConfig
from .normalization import Normalizer
from .schedules import make_schedule
from .transfer import FreezePlan, apply_freeze, config_differences, load_pretrained, param_groups

log = logging.getLogger(__name__)

BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
# Train-config fields that may change between a killed run and its resumption without changing results.
# A larger cap or another patience continues a run (`cgat train` extended after its cap); the
# stopping state is recomputed from the history, so it applies to the epochs already run. Not where
# the schedule depends on them: the cosine anneals over its span (the cap unless anneal_epochs is
# set, so a run annealed to its cap continues at the floor with anneal_epochs = the old cap), the
# plateau decay uses min_delta.
_RESUMABLE_CHANGES = {"epochs", "anneal_epochs", "anneal_span", "patience", "min_delta", "device", "num_workers",
                      "checkpoint_every", "eval_batch_size", "backend"}
_SCHEDULE_INPUTS = {"cosine": {"anneal_span"}, "plateau": {"min_delta"}}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dataset_targets(dataset: Any) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.float64)
    return np.asarray([dataset[i][1] for i in range(len(dataset))], dtype=np.float64)


def data_identity(prop: object, train_set: Sequence[Any], val_set: Sequence[Any]) -> dict[str, Any]:
    """What a run learns from: its property and digests of its training and validation materials (a
    set that draws its own epochs is named by its length)."""

    def digest(dataset: Sequence[Any]) -> str:
        ids = getattr(dataset, "ids", None)
        if ids is None:
            return f"{len(dataset)} items"
        return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]

    return {"property": prop, "train": digest(train_set), "val": digest(val_set)}


def _check_same_data(saved: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """A folder resumes only the run it was made for: the same property and materials."""
    before = saved.get("metadata", {}).get("data_identity")
    if before is None or before == identity:
        return
    if before.get("property") != identity.get("property"):
        what = f"property {before.get('property')!r}, this run {identity.get('property')!r}"
    else:
        parts = [name for name in ("train", "val") if before.get(name) != identity.get(name)]
        what = f"other {' and '.join(parts)} materials (another data file, split or training size)"
    raise ValueError(f"{path}: this folder holds a run on {what}; nothing in it was changed. "
                     "Use another output folder (or start over in this one: --no-resume, resume=False)")


def _check_resumable(saved: dict[str, Any], train_config: TrainConfig, model_values: dict[str, Any], path: Path) -> None:
    if config_differences(saved["model_config"], model_values):
        raise ValueError(f"{path}: cannot resume, the model config differs from this run's; use resume=False or another out_dir")
    current = train_config.model_dump(mode="json")
    # a field the checkpoint lacks was added since, and its default keeps the earlier behaviour
    before = {name: field.get_default(call_default_factory=True) for name, field in TrainConfig.model_fields.items()}
    before |= saved["train_config"]
    current["anneal_span"] = train_config.anneal_span
    before["anneal_span"] = before["anneal_epochs"] if before["anneal_epochs"] is not None else before["epochs"]
    fixed = _SCHEDULE_INPUTS.get(train_config.schedule, set())
    changed = sorted(
        k for k in set(current) | set(before)
        if (k not in _RESUMABLE_CHANGES or k in fixed) and current.get(k) != before.get(k)
    )
    if changed:
        raise ValueError(f"{path}: cannot resume, train config fields changed: {changed}; use resume=False or another out_dir")


def read_or_set_aside(path: Path, map_location: torch.device) -> tuple[dict[str, Any] | None, str | None]:
    """``last.pt``'s content, or, when it is damaged, None and a warning for the run: a damaged last.pt
    must not stop a manifest, so it is renamed ``last.pt.damaged`` and the run starts afresh."""
    try:
        return read_checkpoint(path, map_location=map_location), None
    except DamagedCheckpointError as error:
        aside = path.with_name(path.name + ".damaged")
        path.replace(aside)
        message = f"{error}; set aside as {aside.name}, the run started afresh"
        log.warning(message)
        return None, message


class RunState:
    """What a training run is and has learnt so far: model, normaliser, freeze plan, optimiser,
    schedule and history, built from the configs and saved to / restored from its checkpoints."""

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        train_set: Sequence[Any],
        out_dir: Path,
        init_checkpoint: Path | None,
        metadata: dict[str, Any],
    ) -> None:
        self.config = train_config
        self.device = distributed.rank_device(resolve_device(train_config.device))
        self.backend = train_config.backend or model_config.backend
        self.model_config = model_config.model_copy(update={"backend": self.backend})
        self.model_values = self.model_config.model_dump(mode="json")
        self.out_dir = out_dir
        self.metadata = dict(metadata)
        if train_config.amp and self.device.type != "cuda":
            log.warning("mixed precision needs a GPU; training in float32 on %s", self.device)
        self.use_amp = train_config.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if train_config.amp_dtype == "bf16" else torch.float16

        if train_config.threads is not None:
            torch.set_num_threads(train_config.threads)
        seed_everything(train_config.seed)
        self.model: nn.Module = CGAT(self.model_config)
        self.init_state: dict[str, Any] | None = None
        if init_checkpoint is not None:
            self.init_state = load_pretrained(self.model, init_checkpoint, self.model_values)
            self.metadata["init_checkpoint"] = str(init_checkpoint)
            pretrain_run = self.init_state.get("metadata", {}).get("mlflow_run_id")
            if pretrain_run:
                self.metadata["pretrain_run_id"] = pretrain_run
        if self.init_state is not None and train_config.normalization == "keep":
            self.normalizer = Normalizer.from_dict(self.init_state["normalization"])
        else:
            self.normalizer = Normalizer.fit(_dataset_targets(train_set))

        self.plan: FreezePlan = apply_freeze(self.model, train_config)
        self.model.to(self.device)
        self.normalizer.to(self.device)
        if distributed.is_active():
            self.metadata["world_size"] = distributed.world_size()
        self.optimizer = torch.optim.AdamW(
            param_groups(self.plan, train_config), lr=train_config.lr, weight_decay=train_config.weight_decay
        )
        self.scheduler = make_schedule(self.optimizer, train_config)
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.epoch = 0  # epochs completed
        self.best_epoch = -1
        self.best_val_mae = math.inf
        self.train_seconds = 0.0  # wall time of the epochs run, over every resumption
        self.history: list[dict[str, float]] = []

    # --- checkpoints ---------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model_state": self.model.state_dict(),
            "model_config": self.model_values,
            "train_config": self.config.model_dump(mode="json"),
            "normalization": self.normalizer.as_dict(),
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_val_mae": self.best_val_mae,
            "history": [dict(row) for row in self.history],
            "train_seconds": self.train_seconds,
            "metadata": self.metadata,
            "n_trainable": self.plan.n_trainable,
            "n_frozen": self.plan.n_frozen,
            "frozen_groups": list(self.plan.frozen),
        }

    def save_last(self) -> None:
        state = self.checkpoint_state()
        state.update(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=capture_rng_state(),
        )
        save_checkpoint(state, self.out_dir / LAST_NAME)

    def resume_from(self, path: Path, saved: dict[str, Any] | None = None) -> None:
        """Continue from ``path``; ``saved`` is its content when the caller has already read it."""
        if saved is None:
            saved = read_checkpoint(path, map_location=self.device)
        _check_same_data(saved, self.metadata["data_identity"], path)
        _check_resumable(saved, self.config, self.model_values, path)
        load_model_state(self.model, saved["model_state"], path)
        self.normalizer.load_state_dict(Normalizer.from_dict(saved["normalization"]).state_dict())
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.epoch = int(saved["epoch"])
        self.best_epoch = int(saved["best_epoch"])
        self.best_val_mae = float(saved["best_val_mae"])
        self.history = [dict(row) for row in saved["history"]]
        self.train_seconds = float(saved.get("train_seconds", 0.0))
        self.metadata = {**saved.get("metadata", {}), **self.metadata}
        # With DDP every rank restores rank 0's RNG state: all ranks start from the same seed and
        # draw the same numbers (shuffling has its own generator), so they are the same anyway.
        restore_rng_state(saved["rng"])
        saved_world = int(saved.get("metadata", {}).get("world_size", 1))
        if saved_world != distributed.world_size():
            log.warning("%s was written by %d process(es), resumed by %d: the global batches stay the same, "
                        "only rounding differs", path, saved_world, distributed.world_size())
        log.info("resuming %s after epoch %d", path, self.epoch)

    def current_lr(self) -> float:
        """The base learning rate of this epoch (param groups carry it times their factor)."""
        group = self.optimizer.param_groups[0]
        return float(group["lr"]) / float(group.get("lr_factor", 1.0))
