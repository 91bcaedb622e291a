"""What the training loop writes to its MLflow run, in one place: the training configuration, the
provenance of the numbers, the run its starting weights come from, each epoch, and the outcome. The
data a run is given (sizes, paths, the run's keys) is the front end's to log (``cgat train``, the
benchmark runner).

Without a tracker (no MLflow, or a data-parallel rank other than 0) every call does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import kernels, numerics
from ..versions import machine_label, version_tags
from . import distributed
from .inference import PREDICTIONS_ARTIFACT_DIR

if TYPE_CHECKING:
    from .run_state import RunState
    from .schedules import StopReason
    from .tracking import Tracker

EPOCH_METRICS = ("train_mae", "val_mae", "lr")  # logged to MLflow at step = epoch


def epoch_metrics(row: Mapping[str, float]) -> dict[str, float]:
    return {name: row[name] for name in EPOCH_METRICS}


def provenance_tags() -> dict[str, str]:
    """The code, packages, numerics, threads and machine that produced a run's numbers. Tags, not
    params: a run resumed on another machine may differ in them (params cannot change)."""
    return {**version_tags(), **numerics.tags(), "cgat.torch_threads": str(torch.get_num_threads()),
            "cgat.machine": machine_label()}


class RunLog:
    def __init__(self, tracker: "Tracker | None") -> None:
        self.tracker = tracker

    def start(self, run: "RunState", kernels_on: bool, on_features: bool, resume_warning: str | None) -> None:
        """The configuration and provenance of the run, and the epochs of a resumed run MLflow lacks."""
        tracker = self.tracker
        if tracker is None:
            return
        tracker.log_config(model=run.model_values, train=run.config.model_dump(mode="json"))
        tracker.set_tags({
            **provenance_tags(),
            # The same functions either way; which ran explains a run's speed.
            "cgat.cpu_kernels": "on" if kernels_on else "off",
            "cgat.head_on_features": str(on_features).lower(),
        })
        tracker.log_params({"n_trainable": run.plan.n_trainable, "n_frozen": run.plan.n_frozen,
                            "frozen_groups": ",".join(run.plan.frozen) or "none"})
        normalization = run.normalizer.as_dict()
        tracker.log_params({"normalization.mean": normalization["mean"], "normalization.std": normalization["std"]})
        if "init_checkpoint" in run.metadata:
            tracker.log_params({"init_checkpoint": run.metadata["init_checkpoint"]})
        if "pretrain_run_id" in run.metadata:  # the run that made the starting weights (their checkpoint says)
            tracker.set_pretrain_run(str(run.metadata["pretrain_run_id"]))
        if resume_warning is not None:
            tracker.set_tags({"cgat.resume_warning": resume_warning[:4000]})
        tracker.log_missing_epochs({int(row["epoch"]): epoch_metrics(row) for row in run.history})
        if distributed.is_active():
            tracker.set_tags({"cgat.ddp.world_size": distributed.world_size(),
                              "cgat.ddp.per_rank_batch": distributed.per_rank_batch(run.config.batch_size)})

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self.tracker is not None:
            self.tracker.log_epoch(epoch, metrics)

    def finish(self, run: "RunState", stop_reason: "StopReason", test: Mapping[str, float],
               predictions: Path | None, best: Path) -> None:
        """Why and when the run stopped, its test metrics, prediction file and best checkpoint."""
        tracker = self.tracker
        if tracker is None:
            return
        tracker.log_metrics({"best_val_mae": run.best_val_mae, "best_epoch": run.best_epoch, "epochs_run": run.epoch,
                             "train_seconds": run.train_seconds, "n_trainable": run.plan.n_trainable,
                             "n_frozen": run.plan.n_frozen})
        tracker.set_tags({"cgat.stop_reason": stop_reason, "cgat.converged": str(stop_reason == "plateau").lower()})
        if test:
            tracker.log_test(test)
        if predictions is not None:
            tracker.log_artifact(predictions, PREDICTIONS_ARTIFACT_DIR)
        tracker.log_artifact(best, "checkpoints")

    @property
    def run_id(self) -> str | None:
        return self.tracker.run_id if self.tracker is not None else None


def cpu_kernels_on(implementation: str, device: torch.device) -> bool:
    return implementation == "fast" and kernels.applies(torch.zeros(0, device=device))

