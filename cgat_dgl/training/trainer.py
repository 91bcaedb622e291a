"""The training loop: AdamW, L1 on normalised targets, a learning-rate schedule stepped per epoch
(``cgat_dgl.training.schedules``), validation every epoch, early stopping on a validation plateau
under an epoch cap, the best checkpoint by validation MAE, and its test metrics.

Its collaborators: ``run_state`` (the run's state and its ``last.pt`` / ``best.pt``, from which
``train(..., resume=True)`` continues a killed run to the same result as an uninterrupted one, the
shuffle being seeded by ``seed + epoch``), ``run_log`` (what goes to MLflow) and ``inference`` (the
prediction file).

When torch.distributed's default process group is initialised (``cgat train --ddp``), the same
loop runs data-parallel with DistributedDataParallel: ``batch_size`` is the global batch, split
evenly over the ranks; the metrics are reduced over the ranks; only rank 0 writes checkpoints,
prediction files and the MLflow run; every rank resumes from the same ``last.pt``. The plumbing is
in ``cgat_dgl.training.distributed``, which also says why the result equals one process's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import progress as progress_output
from ..model import ModelConfig
from ..strategies import strategy
from . import distributed, frozen_body
from .allocator import keep_freed_memory
from .checkpoint import load_model_state, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .epoch_loaders import EpochLoaders
from .inference import TEST_PREDICTIONS_NAME, predict_loader, write_predictions
from .metrics import regression_metrics
from .run_log import EPOCH_METRICS, RunLog, cpu_kernels_on, epoch_metrics  # noqa: F401 (EPOCH_METRICS: re-exported)
from .run_state import BEST_NAME, LAST_NAME, RunState, data_identity, read_or_set_aside
from .schedules import StopReason, replay_stopping

if TYPE_CHECKING:
    from .tracking import Tracker

# Maps (ids, predicted, actual) in the units the model learnt to those of the target: a strategy
# that learns a correction (cgat_dgl.training.delta) adds its baseline back.
ToTargetUnits = Callable[[Sequence[str], np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_mae: float
    test: dict[str, float]  # mae, rmse, r2 in target units; empty without a test set
    checkpoint: Path  # the best checkpoint
    history: list[dict[str, float]]  # per epoch: epoch, train_mae, val_mae, lr
    n_trainable: int
    n_frozen: int
    normalization: dict[str, float]  # mean, std used for the targets
    frozen_groups: list[str] = field(default_factory=list)
    last_checkpoint: Path | None = None
    run_id: str | None = None
    # the best checkpoint's test predictions in target units, by material id (empty without a test set)
    test_predictions: dict[str, float] = field(default_factory=dict)
    trained_structures: int = 0  # structures seen in training, summed over the epochs
    epochs_run: int = 0
    stop_reason: StopReason = "cap"  # "plateau": the validation MAE stopped improving before the cap
    train_seconds: float = 0.0  # wall time of training and validation epochs, over every resumption

    @property
    def converged(self) -> bool:
        return self.stop_reason == "plateau"

    def summary(self) -> str:
        """One line for a log: the test MAE, why the run stopped, and its best epoch (1-based)."""
        test = f"test MAE {self.test['mae']:.4g}, " if "mae" in self.test else ""
        stop = "plateau" if self.converged else "cap"
        return f"{test}{stop} after {self.epochs_run} epochs (best {self.best_epoch + 1})"


def regression_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    prediction = output[:, 0]
    if kind == "l1":
        return torch.nn.functional.l1_loss(prediction, target)
    # Laplace negative log-likelihood with the predicted log-std (the reference's "robust" L1).
    log_std = output[:, 1]
    return (math.sqrt(2.0) * (prediction - target).abs() * torch.exp(-log_std) + log_std).mean()


def passes_per_epoch(train_set: Sequence[Any], epoch_structures: int | None) -> Sequence[Any]:
    """``train_set``, repeated so that one epoch draws at least ``epoch_structures`` structures (each
    repeat shuffled in with the others); a set that draws its own epochs (``epoch_view``) as it is."""
    if epoch_structures is None or hasattr(train_set, "epoch_view") or len(train_set) >= epoch_structures:
        return train_set
    return torch.utils.data.ConcatDataset([train_set] * math.ceil(epoch_structures / len(train_set)))


class _Run(RunState):
    """A run's state and how one epoch of it trains and evaluates."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the training step calls: DDP around the model on several ranks, the model itself on one.
        self.train_model: nn.Module = distributed.wrap_model(self.model)
        self.predict_model: nn.Module = self.model
        self.loaders = EpochLoaders(self.config, self.backend)

    def train_epoch(self, train_set: Sequence[Any], progress: bool) -> tuple[float, int]:
        """The epoch's training MAE in target units, and the number of structures it trained on
        (over all ranks with DDP)."""
        config = self.config
        self.plan.set_train_mode(self.model)
        loader = self.loaders.for_epoch(train_set, self.epoch)
        abs_error_sum = 0.0
        count = 0
        batches = progress_output.bar(loader, desc=f"epoch {self.epoch + 1}", leave=False, enabled=progress)
        for index, batch in enumerate(batches):
            batch = batch.to(self.device)
            target = self.normalizer.encode(batch.targets.float())
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                output = self.train_model(batch)
            output = output.float()
            loss = regression_loss(output, target, config.loss)
            if not distributed.all_finite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {self.epoch + 1}, batch {index} (ids {batch.ids[:3]}...)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            abs_error_sum += float((output[:, 0].detach() - target).abs().sum()) * float(self.normalizer.std)
            count += batch.num_crystals
        if distributed.is_active():
            abs_error_sum, total = distributed.all_reduce_sum([abs_error_sum, count])
            count = int(round(total))
        if count == 0:
            raise ValueError("the training set gave no batch (empty, or smaller than a batch with drop_last)")
        return abs_error_sum / count, count

    def head_on_features(self, *datasets: Sequence[Any] | None) -> list[Sequence[Any] | None]:
        """The datasets as crystal features of the frozen body when only the head trains (computed
        once, see ``frozen_body``); the same datasets otherwise."""
        if distributed.is_active() or not frozen_body.applies(self.model, self.plan, datasets[0] or []):
            return list(datasets)
        started = time.perf_counter()
        features = [
            None if dataset is None else frozen_body.crystal_features(self.model, self.loaders.loader(dataset, train=False), self.device)
            for dataset in datasets
        ]
        self.train_seconds += time.perf_counter() - started
        self.train_model = self.predict_model = frozen_body.HeadOnFeatures(self.model)  # type: ignore[arg-type]
        self.loaders.use_features()
        return features  # type: ignore[return-value]

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        predicted, actual, _ = self.predict(loader)
        return regression_metrics(predicted, actual)

    def predict(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Predictions, targets and ids of the loader's dataset; with DDP the loader holds this rank's
        ``distributed.shard`` and the result is every rank's, in dataset order, on every rank."""
        predicted, actual, ids = predict_loader(
            self.predict_model, self.normalizer, loader, amp_dtype=self.amp_dtype if self.use_amp else None
        )
        return distributed.gather_shards(predicted, actual, ids)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_set: Sequence[Any],
    val_set: Sequence[Any],
    test_set: Sequence[Any] | None,
    *,
    out_dir: Path,
    init_checkpoint: Path | None = None,
    tracker: "Tracker | None" = None,
    resume: bool = True,
    epoch_callback: Callable[[int, dict[str, float]], None] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
    to_target_units: ToTargetUnits | None = None,
) -> TrainResult:
    """Train (or transfer, with ``init_checkpoint``) and return the best epoch's test metrics.

    ``to_target_units``: the test metrics and predictions are of its output (a correction plus its
    baseline, ``delta.add_back``), not of what the model learnt.

    ``metadata`` (plain values) is stored in the checkpoints, e.g. the property name and graph
    parameters, so that ``cgat predict`` can rebuild inputs. ``epoch_callback(epoch, metrics)``
    runs after each epoch's checkpoints are written; an exception from it (e.g. Optuna's
    TrialPruned) stops training and leaves a resumable ``last.pt``.

    Data-parallel (torch.distributed initialised): call on every rank with the same arguments,
    except ``tracker``, which only rank 0 may have. Every rank returns the same result.
    """
    out_dir = Path(out_dir)
    keep_freed_memory()
    entry = strategy(train_config.strategy)
    if entry.is_baseline:
        raise ValueError(f"strategy {train_config.strategy!r} is a baseline: it is fitted (cgat_dgl.baselines), not trained")
    from_scratch = entry.starts_from == "scratch"
    if from_scratch and init_checkpoint is not None:
        raise ValueError(f"strategy {train_config.strategy!r} trains from scratch; use 'full' or 'head' with an init checkpoint")
    if not from_scratch and init_checkpoint is None:
        raise ValueError(f"strategy {train_config.strategy!r} needs an init checkpoint to transfer from")
    if len(train_set) == 0:
        raise ValueError("the training set is empty")
    if len(val_set) == 0:
        raise ValueError("the validation set is empty: the best checkpoint is chosen by validation MAE")
    distributed.per_rank_batch(train_config.batch_size)  # with DDP: refuse a global batch the ranks cannot split
    if tracker is not None and not distributed.is_main():
        raise ValueError(f"rank {distributed.rank()} got a tracker: only rank 0 logs the run to MLflow")
    out_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()  # the one process that writes files (always, without DDP)
    metadata = dict(metadata or {})
    metadata["data_identity"] = data_identity(metadata.get("property"), train_set, val_set)
    run = _Run(model_config, train_config, train_set, out_dir, init_checkpoint, metadata)
    run_log = RunLog(tracker)
    if tracker is not None:
        run.metadata["mlflow_run_id"] = tracker.run_id
    best_path, last_path = out_dir / BEST_NAME, out_dir / LAST_NAME
    saved, damage = read_or_set_aside(last_path, run.device) if main and resume and last_path.exists() else (None, None)
    if distributed.broadcast_object(resume and last_path.exists()):  # rank 0 decides for every rank
        run.resume_from(last_path, saved)  # read once on rank 0; the other ranks read it themselves
    elif main and best_path.exists():
        best_path.unlink()  # a fresh run must not inherit a previous run's best

    train_set, val_set, test_set = run.head_on_features(train_set, val_set, test_set)  # type: ignore[assignment]
    if run.loaders.on_features:
        log.info("only the head trains: it reads crystal features of the frozen body, computed once")
    log.info(
        "parameters: %d trainable, %d frozen (frozen groups: %s)",
        run.plan.n_trainable, run.plan.n_frozen, ", ".join(run.plan.frozen) or "none",
    )
    run_log.start(run, cpu_kernels_on(model_config.implementation, run.device), run.loaders.on_features, damage)

    progress = progress and main
    val_loader = run.loaders.loader(distributed.shard(val_set), train=False)
    epoch_set = passes_per_epoch(train_set, train_config.epoch_structures)
    stopper = replay_stopping(run.history, train_config)
    remaining = range(run.epoch, run.epoch if stopper.plateaued else train_config.epochs)
    epochs = progress_output.bar(remaining, desc="epochs", enabled=progress, initial=run.epoch, total=train_config.epochs)
    for epoch in epochs:
        started = time.perf_counter()
        lr = run.current_lr()
        train_mae, structures = run.train_epoch(epoch_set, progress)
        val_mae = run.evaluate(val_loader)["mae"]
        run.scheduler.step(val_mae)
        stopper.update(val_mae)
        run.epoch = epoch + 1
        run.train_seconds += time.perf_counter() - started
        row = {"epoch": epoch, "train_mae": train_mae, "val_mae": val_mae, "lr": lr, "structures": structures}
        run.history.append(row)
        # val_mae is the same number on every rank (gathered predictions), so all agree on the best.
        if val_mae < run.best_val_mae:
            run.best_val_mae, run.best_epoch = val_mae, epoch
            if main:
                save_checkpoint(run.checkpoint_state(), best_path)
        if main:
            run.save_last()
            if train_config.checkpoint_every and run.epoch % train_config.checkpoint_every == 0:
                save_checkpoint(run.checkpoint_state(), out_dir / f"epoch_{run.epoch}.pt")
        distributed.barrier()  # every rank's callback runs after rank 0's checkpoints exist
        epochs.set_postfix(train_mae=f"{train_mae:.4g}", val_mae=f"{val_mae:.4g}")
        progress_output.line(
            f"epoch {run.epoch}/{train_config.epochs}: train_mae {train_mae:.4g}, val_mae {val_mae:.4g}, "
            f"lr {lr:.3g}, {time.perf_counter() - started:.1f} s",
            enabled=progress,
        )
        metrics = epoch_metrics(row)
        run_log.epoch(epoch, metrics)
        if epoch_callback is not None:
            epoch_callback(epoch, metrics)
        if stopper.plateaued:
            break

    stop_reason: StopReason = "plateau" if stopper.plateaued else "cap"
    progress_output.line(
        f"stopped after epoch {run.epoch} ({'validation plateau' if stop_reason == 'plateau' else 'epoch cap'}); "
        f"best epoch {run.best_epoch + 1}, val_mae {run.best_val_mae:.4g}",
        enabled=progress,
    )
    distributed.barrier()
    if not best_path.exists():
        raise RuntimeError(f"{out_dir}: no best checkpoint (validation MAE never finite)")
    best = read_checkpoint(best_path, map_location=run.device)
    load_model_state(run.model, best["model_state"], best_path)
    finished_by = run.metadata.get("mlflow_run_id")
    if main and finished_by is not None and best.get("metadata", {}).get("mlflow_run_id") != finished_by:
        # a best epoch from before a restart: the checkpoint names the run that finished, whose
        # weights transfers link to
        save_checkpoint({**best, "metadata": {**best.get("metadata", {}), "mlflow_run_id": finished_by}}, best_path)
    test: dict[str, float] = {}
    test_predictions: dict[str, float] = {}
    predictions_path: Path | None = None
    if test_set is not None and len(test_set) > 0:
        predicted, actual, ids = run.predict(run.loaders.loader(distributed.shard(test_set), train=False))
        if to_target_units is not None:
            predicted, actual = to_target_units(ids, predicted, actual)
        test = regression_metrics(predicted, actual)
        test_predictions = dict(zip(ids, np.asarray(predicted, float).tolist()))
        if main:
            predictions_path = write_predictions(out_dir / TEST_PREDICTIONS_NAME, ids, actual, predicted)
    run_log.finish(run, stop_reason, test, predictions_path, best_path)
    return TrainResult(
        best_epoch=run.best_epoch,
        best_val_mae=run.best_val_mae,
        test=test,
        checkpoint=best_path,
        history=run.history,
        n_trainable=run.plan.n_trainable,
        n_frozen=run.plan.n_frozen,
        normalization=run.normalizer.as_dict(),
        frozen_groups=list(run.plan.frozen),
        last_checkpoint=last_path,
        run_id=distributed.broadcast_object(run_log.run_id),
        test_predictions=test_predictions,
        trained_structures=int(sum(row.get("structures", 0) for row in run.history)),
        epochs_run=run.epoch,
        stop_reason=stop_reason,
        train_seconds=run.train_seconds,
    )
