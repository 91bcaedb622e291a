"""Executes the runs of a manifest: shared pre-training first, then transfers, each tracked in MLflow.

Idempotent and resumable: a run is found again by its key; finished runs are skipped, unfinished or
failed ones continue in the same MLflow run from their last checkpoint. Workers (processes, or
machines sharing the store and the work folder) claim runs with file locks, so none runs twice.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.datasets import TaskData
from benchmarks.manifest import Manifest
from benchmarks.plan import PretrainRun, TransferRun, expand
from benchmarks.pretrained import SHIPPED_TAG, find_shipped, install_shipped
from benchmarks.store import EXPERIMENTS_TAG, Store
from benchmarks.strategies import RunInputs, pretrain_inputs, transfer_inputs, trained_structures
from cgat_dgl import progress as progress_output
from cgat_dgl.baselines import FITTED, fit_predictions, predictions_of
from cgat_dgl.model.config import ModelConfig
from cgat_dgl.strategies import StrategySpec, strategy
from cgat_dgl.training.config import TrainConfig, train_config
from cgat_dgl.training.metrics import regression_metrics
from cgat_dgl.training.inference import PREDICTIONS_ARTIFACT_DIR, TEST_PREDICTIONS_NAME, write_predictions
from cgat_dgl.training.run_log import provenance_tags
from cgat_dgl.training.trainer import train

Spec = PretrainRun | TransferRun


@dataclass
class RunnerOptions:
    profile: str
    data_path: Path
    work_dir: Path  # checkpoints and locks
    tracking_uri: str | None = None
    cache_dir: Path | None = None  # default: the manifest's data.cache_dir
    only: list[str] | None = None
    suites: list[str] | None = None
    workers: int | None = None  # None: the profile's workers
    pretrain_only: bool = False  # only the pre-trainings the selected experiments start from
    use_shipped: bool = True  # a shipped pre-trained model whose card matches replaces its pre-training
    progress: bool = True
    poll_s: float = 5.0
    worker: bool = False  # one of several processes sharing a log: lines only, each naming its run


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def model_config_for(settings: dict[str, Any], backend: str) -> ModelConfig:
    values = dict(settings)
    preset = values.pop("preset")
    return ModelConfig.preset(preset, **{**values, "backend": backend})


def train_config_for(spec: Spec) -> TrainConfig:
    """The run's training config: its stage settings (every one a TrainConfig field), strategy and seed."""
    strategy = "none" if spec.kind == "pretrain" else spec.strategy
    return train_config(spec.stage, strategy=strategy, seed=spec.seed)


# What decided the bits of a run's results: part of its key, so a store never mixes numbers computed
# differently under one key.
NUMERICS_TAG = "cgat.numerics_key"


def spec_tags(spec: Spec) -> dict[str, str]:
    if isinstance(spec, PretrainRun):
        return {
            "cgat.kind": "pretrain",
            "cgat.experiment": "pretrain",
            "cgat.profile": spec.profile,
            "cgat.strategy": "pretrain",
            "cgat.source": spec.prop,
            "cgat.target": spec.prop,
            "cgat.task_type": "pretrain",
            "cgat.seed": str(spec.seed),
            "cgat.split_seed": str(spec.split_seed),
            NUMERICS_TAG: spec.numerics,
        }
    model = {"cgat.pretrain_seed": str(spec.pretrain.seed)} if spec.pretrain is not None else {}
    return {
        **model,
        "cgat.kind": "transfer",
        "cgat.experiment": spec.experiment,
        "cgat.profile": spec.profile,
        "cgat.strategy": spec.strategy,
        "cgat.source": spec.source,
        "cgat.target": spec.target,
        "cgat.task_type": spec.task_type,
        "cgat.seed": str(spec.seed),
        "cgat.split_seed": str(spec.split_seed),
        "cgat.suite": spec.suite,
        EXPERIMENTS_TAG: ",".join(spec.experiments),
        NUMERICS_TAG: spec.numerics,
    }


class Runner:
    def __init__(self, manifest: Manifest, options: RunnerOptions, task_data: TaskData | None = None) -> None:
        self.manifest = manifest
        self.options = options
        self.profile = manifest.profile(options.profile)
        self.store = Store(options.tracking_uri, options.work_dir)
        self._task_data = task_data
        self.pretrains, self.transfers = expand(
            manifest, options.profile, options.only, data_key=self.data_key, suites=options.suites
        )
        if options.pretrain_only:
            self.transfers = []

    @property
    def data_key(self) -> str:
        return TaskData.file_key(self.options.data_path)

    @property
    def specs(self) -> list[Spec]:
        return [*self.pretrains, *self.transfers]

    @property
    def task_data(self) -> TaskData:
        if self._task_data is None:
            self._task_data = TaskData.load(
                self.manifest, self.options.data_path, self.options.cache_dir,
                progress=self.options.progress and not self.options.worker,
            )
        return self._task_data

    # --- planning ------------------------------------------------------------------------------
    def status(self) -> list[tuple[Spec, str]]:
        states = self.store.runs_by_key()
        return [(spec, states[spec.key].status if spec.key in states else "NEW") for spec in self.specs]

    # --- execution -----------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return self.options.workers if self.options.workers is not None else self.profile.workers

    def check_data(self) -> None:
        """Every pre-training split the plan needs, made before anything trains: one that the leakage
        rule leaves empty is an error now (``LeakageError``), not a failed run and its failed transfers."""
        for spec in self.pretrains:
            self.task_data.pretrain_split(spec.prop)

    def run(self) -> Outcome:
        workers = self.workers
        if workers <= 1:
            return self.work()
        self.task_data  # build the graph cache once before the workers read it
        context = mp.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)
        with context.Pool(workers) as pool:
            parts = pool.starmap(_worker, [(self.manifest, self.options, threads, index) for index in range(workers)])
        outcome = Outcome()
        for part in parts:
            outcome.done += part.done
            outcome.failed.update(part.failed)
        # a worker "skips" what another worker finished meanwhile: only runs no worker trained count
        trained = set(outcome.done)
        outcome.skipped = sorted({key for part in parts for key in part.skipped} - trained)
        return outcome

    def work(self) -> Outcome:
        """Run every spec this process can claim until none is left to do."""
        outcome = Outcome()
        pending = list(self.specs)
        while pending:
            states = self.store.runs_by_key()
            waiting: list[Spec] = []
            progressed = False
            for spec in pending:
                state = states.get(spec.key)
                if state is not None and state.finished:
                    if isinstance(spec, TransferRun):
                        self.store.add_experiments(state, spec.experiments)
                    outcome.skipped.append(spec.key)
                    progressed = True
                    continue
                dependencies = spec.dependencies if isinstance(spec, TransferRun) else ()
                failed = [d for d in dependencies if d.key in outcome.failed]
                if failed:
                    outcome.failed[spec.key] = f"the run it starts from, {failed[0].label}, failed"
                    progressed = True
                    continue
                # This pass's snapshot, plus what this process finished since; the next pass sees
                # what other workers finished.
                if any(d.key not in outcome.done and not (d.key in states and states[d.key].finished) for d in dependencies):
                    waiting.append(spec)
                    continue
                with self.store.claim(spec.key) as claimed:
                    if not claimed:
                        waiting.append(spec)
                        continue
                    if (latest := self.store.runs_by_key().get(spec.key)) is not None and latest.finished:
                        outcome.skipped.append(spec.key)
                    else:
                        error = self.execute(spec)
                        if error is None:
                            outcome.done.append(spec.key)
                        else:
                            outcome.failed[spec.key] = error
                progressed = True
            pending = [s for s in waiting if s.key not in outcome.failed]
            if pending and not progressed:
                time.sleep(self.options.poll_s)  # another worker holds what is left
        return outcome

    def execute(self, spec: Spec) -> str | None:
        """Train one spec in its MLflow run; a failure marks the run FAILED and returns the error."""
        parent_name = "pretrain" if isinstance(spec, PretrainRun) else spec.experiment
        parent = self.store.parent(parent_name, spec.profile, {})
        tracker = self.store.open_child(spec.key, parent, spec.label, spec_tags(spec))
        resumes = (self.options.work_dir / "checkpoints" / spec.key / "last.pt").exists()
        print(f"[{'resume' if resumes else 'run'}] {spec.label}  ({spec.key}, mlflow run {tracker.run_id})", flush=True)
        started = time.perf_counter()
        try:
            summary = self._train(spec, tracker)
        except Exception as error:  # one failing run must not stop the others
            message = f"{type(error).__name__}: {error}"
            tracker.set_tags({"cgat.error": message[:4000], "cgat.traceback": traceback.format_exc()[-4000:]})
            tracker.end("FAILED")
            print(f"[failed] {spec.label}: {message}", flush=True)
            return message
        except BaseException:
            tracker.end("KILLED")
            raise
        tracker.end("FINISHED")
        print(f"[done] {spec.label} in {time.perf_counter() - started:.0f} s: {summary}", flush=True)
        if isinstance(spec, PretrainRun):
            self._register(spec, tracker.run_id, summary)
        return None

    def _register(self, spec: PretrainRun, run_id: str, summary: str) -> None:
        """The finished pre-training as a version of its registered model (a registry that refuses it
        costs the registration only, not the run)."""
        from cgat_dgl import registry

        run = self.store.client.get_run(run_id)
        shipped = run.data.tags.get(SHIPPED_TAG)
        card = self.manifest.resolve(self.manifest.pretrained_models) / shipped / "README.md" if shipped else None
        description = card.read_text(encoding="utf-8") if card is not None and card.is_file() else f"{spec.label}: {summary}"
        tags = {"cgat.run_key": spec.key, "cgat.numerics_key": spec.numerics, "cgat.split_seed": str(spec.split_seed),
                "cgat.seed": str(spec.seed), "cgat.pretrain_size": str(spec.size), "test_mae": f"{run.data.metrics.get('test_mae', float('nan')):.6g}",
                **({SHIPPED_TAG: shipped} if shipped else {})}
        try:
            version = registry.register_pretrained(self.store.client, run_id, spec.model["preset"], spec.prop,
                                                   description, tags)
        except Exception as error:  # noqa: BLE001
            print(f"warning: {spec.label} was not registered in the model registry: {error}", flush=True)
            return
        print(f"[registered] {spec.label} as models:/{version.name}/{version.version}", flush=True)

    def _train(self, spec: Spec, tracker: Any) -> str:
        """Train ``spec`` (or install its shipped model) and say in a few words how it ended."""
        data = self.task_data
        model_config = model_config_for(spec.model, spec.stage["backend"])
        train_config = train_config_for(spec)
        work_dir = self.options.work_dir
        if isinstance(spec, PretrainRun):
            if self.options.use_shipped:
                shipped = find_shipped(spec, self.manifest.resolve(self.manifest.pretrained_models), data)
                if shipped is not None:
                    install_shipped(shipped, spec, tracker, work_dir)
                    return f"shipped model {shipped.folder.name}, test MAE {shipped.card.test_mae:.4g}"
            inputs = pretrain_inputs(spec, data)
        else:
            inputs = transfer_inputs(spec, data, work_dir)
        states = self.store.runs_by_key()
        fitted = isinstance(spec, TransferRun) and strategy(spec.strategy).is_baseline
        if isinstance(inputs.init_run, PretrainRun):
            pretrain_run_id = states[inputs.init_run.key].run_id
            if fitted:  # a trained run's log links it, from the checkpoint it starts from
                tracker.set_pretrain_run(pretrain_run_id)
            from cgat_dgl import registry

            if (version := registry.version_of_run(self.store.client, pretrain_run_id)) is not None:
                tracker.set_tags({registry.MODEL_VERSION_TAG: f"{version.name}/{version.version}"})
        elif inputs.init_run is not None:
            tracker.set_tags({"cgat.joint_run_id": states[inputs.init_run.key].run_id})
        tracker.log_params(
            {
                "train_size": inputs.target_train_size,
                "pretrain_size": inputs.source_structures,
                "val_size": len(inputs.val_set),
                "test_size": len(inputs.test_set),
                "data.path": str(self.options.data_path),
                **inputs.params,
            }
        )
        if fitted:
            return self._fit_baseline(spec, strategy(spec.strategy), inputs, tracker)
        if self.options.worker:
            progress_output.set_line_prefix(f"[{spec.key}] ")
        result = train(
            model_config,
            train_config,
            inputs.train_set,
            inputs.val_set,
            inputs.test_set,
            out_dir=work_dir / "checkpoints" / spec.key,
            init_checkpoint=inputs.init_checkpoint,
            tracker=tracker,
            resume=True,
            metadata={"property": spec.prop if isinstance(spec, PretrainRun) else spec.target, **inputs.metadata},
            progress=self.options.progress,
            to_target_units=inputs.to_target_units,
        )
        inherited = trained_structures(work_dir, inputs.init_run) if inputs.init_run is not None else 0
        tracker.log_metrics(
            {
                "trained_structures": float(result.trained_structures),
                "total_trained_structures": float(result.trained_structures + inherited),
            }
        )
        if isinstance(spec, TransferRun):
            _log_subsets(spec, inputs, result.test_predictions, tracker)
        return result.summary()

    def _fit_baseline(self, spec: TransferRun, entry: StrategySpec, inputs: RunInputs, tracker: Any) -> str:
        """Fit a baseline on the run's training subset and score it as a trained run is scored."""
        assert entry.fit is not None
        targets = self.task_data.loaded.targets
        started = time.perf_counter()
        predicted = fit_predictions(
            entry.fit, inputs.train_set, [inputs.val_set, inputs.test_set],
            source_values=targets[spec.source] if spec.source in targets else None, source=spec.source,
            checkpoint=inputs.init_checkpoint, backend=spec.stage["backend"],
        )  # fmt: skip
        seconds = time.perf_counter() - started
        val = regression_metrics(predictions_of(inputs.val_set, predicted), inputs.val_set.targets)
        test_set = inputs.test_set
        test_predicted = predictions_of(test_set, predicted)
        test = regression_metrics(test_predicted, test_set.targets)
        out_dir = self.options.work_dir / "checkpoints" / spec.key
        out_dir.mkdir(parents=True, exist_ok=True)
        path = write_predictions(out_dir / TEST_PREDICTIONS_NAME, test_set.ids, test_set.targets, test_predicted)
        inherited = trained_structures(self.options.work_dir, inputs.init_run) if inputs.init_run is not None else 0
        tracker.log_params({"baseline_fit": entry.fit})
        # the provenance a trained run's log gets: results are compared only with runs of the same code
        tracker.set_tags(provenance_tags())
        tracker.log_metrics({"best_val_mae": val["mae"], "best_epoch": 0, "epochs_run": 0, "train_seconds": seconds,
                             "trained_structures": 0.0, "total_trained_structures": float(inherited)})
        tracker.set_tags({"cgat.stop_reason": FITTED, "cgat.converged": "true"})
        tracker.log_test(test)
        tracker.log_artifact(path, PREDICTIONS_ARTIFACT_DIR)
        _log_subsets(spec, inputs, predicted, tracker)
        return f"test MAE {test['mae']:.4g}, {FITTED} ({entry.fit}) in {seconds:.1f} s"


def _log_subsets(spec: TransferRun, inputs: RunInputs, predictions: dict[str, float], tracker: Any) -> None:
    """The test MAE and RMSE on each subset above a threshold (e.g. gaps above 0.1 eV), from the same
    predictions as the run's test MAE, in target units."""
    test_set = inputs.target_test
    predicted = np.asarray([predictions[i] for i in test_set.ids], dtype=np.float64)
    actual = np.asarray(test_set.targets, dtype=np.float64)
    for name, threshold in spec.subsets_above.items():
        mask = actual > threshold
        if mask.any():
            metrics = regression_metrics(predicted[mask], actual[mask])
            tracker.log_metrics({f"test_mae_{name}": metrics["mae"], f"test_rmse_{name}": metrics["rmse"]})


def _worker(manifest: Manifest, options: RunnerOptions, threads: int, index: int) -> Outcome:
    torch.set_num_threads(threads)
    # no bars (several processes would draw over each other), but a file gets each epoch's line
    options = RunnerOptions(**{**options.__dict__, "progress": options.progress and not progress_output.on_terminal(),
                               "worker": True})
    return Runner(manifest, options).work()
