"""The training loop: AdamW, L1 on normalised targets, a learning-rate schedule stepped per epoch
(``cgat_dgl.training.schedules``), validation every epoch, early stopping on a validation plateau
under an epoch cap, the best checkpoint by validation MAE, and its test metrics.

Every epoch writes ``last.pt`` (weights, optimiser, scheduler, RNG states, history) so that
``train(..., resume=True)`` continues a killed run to the same result as an uninterrupted one.
Shuffling draws from a generator seeded by ``seed + epoch`` and the global RNG states are
restored on resume, which is what makes the continuation exact on CPU.

When torch.distributed's default process group is initialised (``cgat train --ddp``), the same
loop runs data-parallel with DistributedDataParallel: ``batch_size`` is the global batch, split
evenly over the ranks; the metrics are reduced over the ranks; only rank 0 writes checkpoints,
prediction files and the MLflow run; every rank resumes from the same ``last.pt``. The plumbing is
in ``cgat_dgl.training.distributed``, which also says why the result equals one process's.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import numerics
from .. import progress as progress_output
from ..graphs.collate import make_loader
from ..model import CGAT, ModelConfig
from .. import kernels
from ..strategies import strategy
from ..versions import machine_label, version_tags
from . import distributed, frozen_body
from .allocator import keep_freed_memory
from .checkpoint import DamagedCheckpointError, capture_rng_state, load_model_state, read_checkpoint, restore_rng_state, save_checkpoint
from .config import TrainConfig
from .inference import predict_loader
from .metrics import regression_metrics
from .normalization import Normalizer
from .optimizer import AdamW
from .schedules import StopReason, make_schedule, replay_stopping
from .transfer import FreezePlan, apply_freeze, config_differences, load_pretrained, param_groups

if TYPE_CHECKING:
    from .tracking import Tracker

log = logging.getLogger(__name__)

BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
# Per-material test predictions of the best checkpoint: the report bootstraps over test materials.
TEST_PREDICTIONS_NAME = "test_predictions.csv"
PREDICTIONS_ARTIFACT_DIR = "predictions"
# Train-config fields that may change between a killed run and its resumption without changing results.
# A larger cap or another patience continues a run (`cgat train` extended after its cap); the
# stopping state is recomputed from the history, so it applies to the epochs already run. Not where
# the schedule depends on them: the cosine anneals over its span (the cap unless anneal_epochs is
# set, so a run annealed to its cap continues at the floor with anneal_epochs = the old cap), the
# plateau decay uses min_delta.
_RESUMABLE_CHANGES = {"epochs", "anneal_epochs", "anneal_span", "patience", "min_delta", "device", "num_workers",
                      "checkpoint_every", "eval_batch_size", "backend"}
_SCHEDULE_INPUTS = {"cosine": {"anneal_span"}, "plateau": {"min_delta"}}


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


def regression_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    prediction = output[:, 0]
    if kind == "l1":
        return torch.nn.functional.l1_loss(prediction, target)
    # Laplace negative log-likelihood with the predicted log-std (the reference's "robust" L1).
    log_std = output[:, 1]
    return (math.sqrt(2.0) * (prediction - target).abs() * torch.exp(-log_std) + log_std).mean()


def _dataset_targets(dataset: Any) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(targets, dtype=np.float64)
    return np.asarray([dataset[i][1] for i in range(len(dataset))], dtype=np.float64)


def passes_per_epoch(train_set: Sequence[Any], epoch_structures: int | None) -> Sequence[Any]:
    """``train_set``, repeated so that one epoch draws at least ``epoch_structures`` structures (each
    repeat shuffled in with the others); a set that draws its own epochs (``epoch_view``) as it is."""
    if epoch_structures is None or hasattr(train_set, "epoch_view") or len(train_set) >= epoch_structures:
        return train_set
    return torch.utils.data.ConcatDataset([train_set] * math.ceil(epoch_structures / len(train_set)))


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


class _Run:
    """The state of one training run, so the loop body stays readable."""

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
        # What the training step calls: DDP around the model on several ranks, the model itself on one.
        self.train_model: nn.Module = distributed.wrap_model(self.model)
        self.predict_model: nn.Module = self.model
        self.on_features = False  # the datasets hold crystal features (frozen_body), not graphs
        if distributed.is_active():
            self.metadata["world_size"] = distributed.world_size()
        self.optimizer = AdamW(
            param_groups(self.plan, train_config), lr=train_config.lr, weight_decay=train_config.weight_decay
        )
        self.scheduler = make_schedule(self.optimizer, train_config)
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.epoch = 0  # epochs completed
        self.best_epoch = -1
        self.best_val_mae = math.inf
        self.train_seconds = 0.0  # wall time of the epochs run, over every resumption
        self.history: list[dict[str, float]] = []
        self._train_loader: DataLoader | None = None

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

    # --- one epoch -----------------------------------------------------------------------------
    def current_lr(self) -> float:
        """The base learning rate of this epoch (param groups carry it times their factor)."""
        group = self.optimizer.param_groups[0]
        return float(group["lr"]) / float(group.get("lr_factor", 1.0))

    def epoch_loader(self, train_set: Sequence[Any]) -> DataLoader:
        """The training loader of this epoch, its shuffle seeded by ``seed + epoch`` so that a resumed
        run sees the same batches. Without workers one loader is reseeded (the same order as a new
        one); worker processes copy the loader's state, so they get a new loader each epoch. A set
        with ``epoch_view(seed)`` (a multi-fidelity draw) gives each epoch its own items."""
        seed = self.config.seed + self.epoch
        epoch_view = getattr(train_set, "epoch_view", None)
        if distributed.is_active():
            return self.distributed_epoch_loader(train_set if epoch_view is None else epoch_view(seed),
                                                 new=epoch_view is not None)
        if epoch_view is not None:
            return self.loader(epoch_view(seed), train=True, seed=seed)
        if self.config.num_workers > 0:
            return self.loader(train_set, train=True, seed=seed)
        if self._train_loader is None:
            self._train_loader = self.loader(train_set, train=True)
        if self._train_loader.generator is None:
            raise RuntimeError("make_loader gave no generator: shuffling could not be made reproducible")
        self._train_loader.generator.manual_seed(seed)
        return self._train_loader

    def distributed_epoch_loader(self, dataset: Sequence[Any], new: bool) -> DataLoader:
        """This rank's share of the epoch: a DistributedSampler whose ``set_epoch`` draws the
        single-process permutation (seeded ``seed + epoch``), so the ranks' batches together are
        the single-process batches. The sampler runs in the main process, so one loader serves
        every epoch, worker processes or not; an epoch view (``new``) gets its own."""
        if new or self._train_loader is None:
            sampler = distributed.train_sampler(dataset, seed=self.config.seed)
            self._train_loader = self.loader(dataset, train=True, sampler=sampler)
        sampler = self._train_loader.sampler
        assert isinstance(sampler, torch.utils.data.DistributedSampler)
        sampler.set_epoch(self.epoch)
        return self._train_loader

    def train_epoch(self, train_set: Sequence[Any], progress: bool) -> tuple[float, int]:
        """The epoch's training MAE in target units, and the number of structures it trained on
        (over all ranks with DDP)."""
        config = self.config
        self.plan.set_train_mode(self.model)
        loader = self.epoch_loader(train_set)
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
            None if dataset is None else frozen_body.crystal_features(self.model, self.loader(dataset, train=False), self.device)
            for dataset in datasets
        ]
        self.train_seconds += time.perf_counter() - started
        self.train_model = self.predict_model = frozen_body.HeadOnFeatures(self.model)  # type: ignore[arg-type]
        self.on_features = True
        self._train_loader = None
        return features  # type: ignore[return-value]

    def loader(
        self, dataset: Sequence[Any], train: bool, seed: int | None = None, sampler: Any = None
    ) -> DataLoader:
        """A training loader (shuffled, or ordered by ``sampler``) or an evaluation loader. With DDP
        a training batch is this rank's share of the global ``batch_size``; an evaluation batch is
        ``eval_batch_size`` per rank (it changes memory use, not results)."""
        config = self.config
        if self.on_features:
            return DataLoader(
                dataset,  # type: ignore[arg-type]
                batch_size=config.batch_size if train else config.eval_batch_size or config.batch_size,
                shuffle=train,
                generator=torch.Generator().manual_seed(config.seed if seed is None else seed),
                collate_fn=frozen_body.collate_features,
                drop_last=config.drop_last and train,
            )
        return make_loader(
            dataset,
            distributed.per_rank_batch(config.batch_size) if train else config.eval_batch_size or config.batch_size,
            shuffle=train and sampler is None,
            backend=self.backend,
            seed=config.seed if seed is None else seed,
            num_workers=config.num_workers,
            drop_last=config.drop_last and train,
            sampler=sampler,
        )

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


EPOCH_METRICS = ("train_mae", "val_mae", "lr")  # logged to MLflow at step = epoch


def _epoch_metrics(row: dict[str, float]) -> dict[str, float]:
    return {name: row[name] for name in EPOCH_METRICS}


def write_predictions(path: Path, ids: Sequence[str], actual: np.ndarray, predicted: np.ndarray) -> Path:
    """id, target, prediction per material, in target units."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "target", "prediction"])
        for row in zip(ids, np.asarray(actual, float).tolist(), np.asarray(predicted, float).tolist()):
            writer.writerow([row[0], f"{row[1]:.9g}", f"{row[2]:.9g}"])
    return path


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
    baseline: dict[str, float] | None = None,
) -> TrainResult:
    """Train (or transfer, with ``init_checkpoint``) and return the best epoch's test metrics.

    ``baseline`` (delta learning): the datasets' targets are corrections to these per-material
    values, and the test metrics and predictions are of ``baseline + correction``, in target units.

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
    if tracker is not None:
        run.metadata["mlflow_run_id"] = tracker.run_id
    best_path, last_path = out_dir / BEST_NAME, out_dir / LAST_NAME
    saved, damage = read_or_set_aside(last_path, run.device) if main and resume and last_path.exists() else (None, None)
    if distributed.broadcast_object(resume and last_path.exists()):  # rank 0 decides for every rank
        run.resume_from(last_path, saved)  # read once on rank 0; the other ranks read it themselves
    elif main and best_path.exists():
        best_path.unlink()  # a fresh run must not inherit a previous run's best

    train_set, val_set, test_set = run.head_on_features(train_set, val_set, test_set)  # type: ignore[assignment]
    if run.on_features:
        log.info("only the head trains: it reads crystal features of the frozen body, computed once")
    counts = {"n_trainable": run.plan.n_trainable, "n_frozen": run.plan.n_frozen}
    log.info(
        "parameters: %d trainable, %d frozen (frozen groups: %s)",
        run.plan.n_trainable, run.plan.n_frozen, ", ".join(run.plan.frozen) or "none",
    )
    if tracker is not None:
        tracker.log_config(model=run.model_values, train=train_config.model_dump(mode="json"))
        # Tags, not params: a run resumed on another machine may differ in them (params cannot change).
        kernels_on = model_config.implementation == "fast" and kernels.applies(torch.zeros(0, device=run.device))
        tracker.set_tags(
            {
                **version_tags(),
                **numerics.tags(),
                "cgat.torch_threads": str(torch.get_num_threads()),
                "cgat.machine": machine_label(),
                # The same functions either way; which ran explains a run's speed.
                "cgat.cpu_kernels": "on" if kernels_on else "off",
                "cgat.head_on_features": str(run.on_features).lower(),
            }
        )
        tracker.log_params({**counts, "frozen_groups": ",".join(run.plan.frozen) or "none"})
        tracker.log_params({"normalization.mean": run.normalizer.as_dict()["mean"],
                            "normalization.std": run.normalizer.as_dict()["std"]})
        if "pretrain_run_id" in run.metadata:
            tracker.set_pretrain_run(str(run.metadata["pretrain_run_id"]))
        if "init_checkpoint" in run.metadata:
            tracker.log_params({"init_checkpoint": run.metadata["init_checkpoint"]})
        if damage is not None:
            tracker.set_tags({"cgat.resume_warning": damage[:4000]})
        tracker.log_missing_epochs({int(row["epoch"]): _epoch_metrics(row) for row in run.history})
        if distributed.is_active():
            tracker.set_tags({"cgat.ddp.world_size": distributed.world_size(),
                              "cgat.ddp.per_rank_batch": distributed.per_rank_batch(train_config.batch_size)})

    progress = progress and main
    val_loader = run.loader(distributed.shard(val_set), train=False)
    epoch_set = passes_per_epoch(train_set, train_config.epoch_structures)
    stopper = replay_stopping(run.history, train_config.patience, train_config.min_delta)
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
        metrics = _epoch_metrics(row)
        if tracker is not None:
            tracker.log_epoch(epoch, metrics)
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
    test: dict[str, float] = {}
    test_predictions: dict[str, float] = {}
    predictions_path: Path | None = None
    if test_set is not None and len(test_set) > 0:
        predicted, actual, ids = run.predict(run.loader(distributed.shard(test_set), train=False))
        if baseline is not None:
            offsets = np.asarray([baseline[graph_id] for graph_id in ids], dtype=np.float64)
            predicted, actual = predicted + offsets, actual + offsets
        test = regression_metrics(predicted, actual)
        test_predictions = dict(zip(ids, np.asarray(predicted, float).tolist()))
        if main:
            predictions_path = write_predictions(out_dir / TEST_PREDICTIONS_NAME, ids, actual, predicted)
    if tracker is not None:
        tracker.log_metrics({"best_val_mae": run.best_val_mae, "best_epoch": run.best_epoch,
                             "epochs_run": run.epoch, "train_seconds": run.train_seconds, **counts})
        tracker.set_tags({"cgat.stop_reason": stop_reason, "cgat.converged": str(stop_reason == "plateau").lower()})
        if test:
            tracker.log_test(test)
        if predictions_path is not None:
            tracker.log_artifact(predictions_path, PREDICTIONS_ARTIFACT_DIR)
        tracker.log_artifact(best_path, "checkpoints")
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
        run_id=distributed.broadcast_object(tracker.run_id if tracker is not None else None),
        test_predictions=test_predictions,
        trained_structures=int(sum(row.get("structures", 0) for row in run.history)),
        epochs_run=run.epoch,
        stop_reason=stop_reason,
        train_seconds=run.train_seconds,
    )
