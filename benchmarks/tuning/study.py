"""Running an Optuna study over learning rate and weight decay for one transfer task and strategy.

Workers (processes, or machines sharing the storage) run the same study until ``n_trials`` trials
are COMPLETE or PRUNED in total, whether they start together or one after another: restarting
continues the study. A worker takes a new trial only while trials are missing; if two workers race
for the last one, the later-numbered trial is declined before any training (it stays FAIL with the
user attribute ``surplus``), so the study never holds more than ``n_trials`` counted trials.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from benchmarks.manifest import StudySpec
from benchmarks.store import EXPERIMENT
from benchmarks.tuning.artifacts import SURPLUS_ATTR, best_trial_summary, write_summary
from benchmarks.tuning.inputs import TrialInputs
from benchmarks.tuning.mlflow_callback import RUN_ID_ATTR, StudyTracking
from benchmarks.tuning.space import SearchSpace, StudyConfigError, make_pruner, make_sampler
from benchmarks.tuning.storage import HeartbeatSettings, display_url, fail_stale_trials, open_storage
from cgat_dgl.strategies import PAPER_STRATEGIES
from cgat_dgl.training.config import train_config
from cgat_dgl.training.trainer import train

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# Settings that define what a study's trials mean; a stored study must not be continued with others.
IDENTITY_FIELDS = ("experiment", "strategy", "sampler", "lr", "weight_decay", "train_size", "seed")


class SurplusTrial(Exception):
    """A trial asked after the study already had ``n_trials`` trials counted or under way."""


@dataclass
class TuneOptions:
    storage: str | None = None  # an RDB URL; default SQLite under the repository's mlflow/
    n_trials: int | None = None  # replaces the spec's total
    tracking_uri: str | None = None
    experiment: str = EXPERIMENT  # the MLflow experiment of the parent and trial runs
    profile: str = ""
    work_dir: Path = Path("runs")  # trial checkpoints under <work_dir>/tuning/<study>/
    summary_dir: Path | None = None  # default <work_dir>/tuning/<study>/summary
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    keep_checkpoints: bool = False
    progress: bool = False
    poll_s: float = 5.0  # how often a worker with nothing to take looks again
    pruner: optuna.pruners.BasePruner | None = None  # replaces the spec's pruner


@dataclass
class StudyResult:
    name: str
    storage: str
    n_trials: int
    counts: dict[str, int]
    best: dict[str, Any] | None
    parent_run_id: str
    files: dict[str, Path]


def effective_trials(spec: StudySpec, options: TuneOptions, space: SearchSpace) -> int:
    n_trials = options.n_trials if options.n_trials is not None else spec.n_trials
    if n_trials < 1:
        raise StudyConfigError(f"study {spec.name!r}: n_trials must be at least 1, got {n_trials}")
    if space.grid_size is not None and n_trials > space.grid_size:
        # A grid point evaluated twice says nothing new; the grid sampler would repeat points.
        print(f"[tune] {spec.name}: the grid has {space.grid_size} points; running {space.grid_size} trials, not {n_trials}")
        n_trials = space.grid_size
    return n_trials


def _identity(spec: StudySpec, profile: str) -> dict[str, Any]:
    values = {name: getattr(spec, name) for name in IDENTITY_FIELDS}
    if spec.lr_relative:  # absent otherwise, so that the studies made before the field load as they are
        values["lr_relative"] = True
    values["profile"] = profile
    return json.loads(json.dumps(values))  # the form the storage gives back (tuples become lists)


def _create_study(spec: StudySpec, options: TuneOptions, tracking: StudyTracking | None, epochs: int) -> optuna.Study:
    space = SearchSpace.from_spec(spec)
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            storage = open_storage(options.storage, options.heartbeat, tracking.on_stale if tracking else None)
            return optuna.create_study(
                storage=storage,
                study_name=spec.name,
                direction="minimize",
                sampler=make_sampler(spec, space),
                pruner=options.pruner or make_pruner(spec, epochs),
                load_if_exists=True,
            )
        except sqlalchemy.exc.SQLAlchemyError:
            # Workers starting together on a new database may race to create its tables.
            if attempt == attempts:
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


def open_study(spec: StudySpec, options: TuneOptions, tracking: StudyTracking | None, epochs: int) -> optuna.Study:
    """Create the study in the storage, or load it when it exists with the same settings."""
    study = _create_study(spec, options, tracking, epochs)
    identity = _identity(spec, options.profile)
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("strategy", spec.strategy)
        study.set_user_attr("sampler", spec.sampler)
        study.set_user_attr("experiment", spec.experiment)
    elif stored != identity:
        changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        raise StudyConfigError(
            f"study {spec.name!r} exists in {display_url(options.storage)} with other settings "
            f"({', '.join(f'{k}: {stored.get(k)!r} there, {identity.get(k)!r} now' for k in changed)}); "
            "rename the study or use another storage"
        )
    return study


def _count(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _is_surplus(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether ``n_trials`` earlier-numbered trials are already counted, running or queued."""
    live = (*COUNTED, TrialState.RUNNING, TrialState.WAITING)
    ahead = [t for t in trial.study.get_trials(deepcopy=False, states=live) if t.number < trial.number]
    return len(ahead) >= n_trials


def make_objective(
    spec: StudySpec,
    inputs: TrialInputs,
    tracking: StudyTracking,
    options: TuneOptions,
    n_trials: int,
) -> Callable[[optuna.Trial], float]:
    space = SearchSpace.from_spec(spec)

    def objective(trial: optuna.Trial) -> float:
        if _is_surplus(trial, n_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(f"study {spec.name!r} already has {n_trials} trials; trial {trial.number} declined")
        lr, weight_decay = space.suggest(trial)
        lr_factor = lr if spec.lr_relative else None
        if lr_factor is not None:
            lr = lr_factor * inputs.train_config.lr  # the task's default rate, scaled
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        retried_run = trial.user_attrs.get(RUN_ID_ATTR)  # inherited when this retries a dead worker's trial
        tags = dict(inputs.tags)
        if retried_run:
            tags["cgat.retried_run"] = str(retried_run)
        factor_param = {} if lr_factor is None else {"lr_factor": lr_factor}
        tracker = tracking.open_trial(trial, {"lr": lr, "weight_decay": weight_decay, **factor_param, **inputs.params}, tags)
        config = train_config(inputs.train_config.model_dump(), lr=lr, weight_decay=weight_decay)
        out_dir = Path(options.work_dir) / "tuning" / spec.name / f"trial-{trial.number}"

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics["val_mae"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"after epoch {epoch + 1}, val MAE {metrics['val_mae']:.4g}")

        try:
            result = train(
                inputs.model_config,
                config,
                inputs.train_set,
                inputs.val_set,
                inputs.test_set,
                out_dir=out_dir,
                init_checkpoint=inputs.init_checkpoint,
                tracker=tracker,
                resume=False,  # a trial, even a retried one, starts from its initial weights
                epoch_callback=report,
                metadata={**inputs.metadata, "study": spec.name, "trial": trial.number},
                progress=options.progress,
            )
        except optuna.TrialPruned:
            raise  # the tracking callback closes the run as PRUNED
        except BaseException as error:
            tracking.finish_trial(trial.number, TrialState.FAIL, error=f"{type(error).__name__}: {error}")
            raise
        finally:
            if not options.keep_checkpoints:
                shutil.rmtree(out_dir, ignore_errors=True)  # the best checkpoint is an artifact of the run
        trial.set_user_attr("best_epoch", result.best_epoch)
        for name, value in result.test.items():
            trial.set_user_attr(f"test_{name}", float(value))
        return result.best_val_mae

    return objective


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    tracking: StudyTracking,
    n_trials: int,
    poll_s: float,
) -> None:
    """Run trials until ``n_trials`` are counted; wait while the missing ones run in other workers."""
    enough = MaxTrialsCallback(n_trials, states=COUNTED)
    while True:
        fail_stale_trials(study)  # a dead worker's trial becomes FAIL and is queued again
        counts = _count(study)
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if done >= n_trials:
            return
        if counts[TrialState.WAITING] == 0 and done + counts[TrialState.RUNNING] >= n_trials:
            time.sleep(poll_s)
            continue
        study.optimize(objective, n_trials=1, callbacks=[enough, tracking], catch=(SurplusTrial,), gc_after_trial=True)


def run_study(
    spec: StudySpec,
    inputs: TrialInputs | Callable[[], TrialInputs],
    options: TuneOptions,
    *,
    epochs: int | None = None,
    tags: dict[str, str] | None = None,
) -> StudyResult:
    """Run (or continue) a study to its number of trials, then record its results on the parent run.

    ``inputs`` may be a function, called only when trials remain to run (loading data and
    pre-training are skipped for a finished study). ``epochs`` sizes the pruner (default: the
    inputs' training epochs).
    """
    space = SearchSpace.from_spec(spec)
    n_trials = effective_trials(spec, options, space)
    if epochs is None:
        if callable(inputs):
            raise ValueError("pass epochs when the trial inputs are built lazily")
        epochs = inputs.train_config.epochs
    tracking = StudyTracking(
        spec.name,
        experiment=options.experiment,
        tracking_uri=options.tracking_uri,
        tags={"cgat.experiment": spec.experiment, "cgat.strategy": spec.strategy, "cgat.profile": options.profile, **(tags or {})},
        params={
            "study.experiment": spec.experiment,
            "study.strategy": spec.strategy,
            "study.sampler": spec.sampler,
            "study.pruner": "custom" if options.pruner else spec.pruner,
            "study.lr": list(spec.lr),
            "study.weight_decay": list(spec.weight_decay),
            "study.train_size": spec.train_size,
            "study.seed": spec.seed,
            "study.storage": display_url(options.storage),
        },
    )
    study = open_study(spec, options, tracking, epochs)
    study.set_user_attr("n_trials", n_trials)
    tracking.set_parent_tags({"cgat.n_trials": n_trials, "optuna.study_name": spec.name})
    counts = _count(study)
    if counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] < n_trials:
        resolved = inputs() if callable(inputs) else inputs
        objective = make_objective(spec, resolved, tracking, options, n_trials)
        work(study, objective, tracking, n_trials, options.poll_s)
    return finish_study(study, tracking, options, n_trials)


def finish_study(study: optuna.Study, tracking: StudyTracking, options: TuneOptions, n_trials: int) -> StudyResult:
    """Best trial, trial table and plots, as files and as artifacts and metrics of the parent run."""
    folder = options.summary_dir or Path(options.work_dir) / "tuning" / study.study_name / "summary"
    files = write_summary(study, folder)
    for path in files.values():
        tracking.log_parent_artifact(path)
    summary = best_trial_summary(study)
    counts = summary["counts"]
    tracking.log_parent_metrics(
        {"n_complete": counts["complete"], "n_pruned": counts["pruned"], "n_failed": counts["fail"] - counts["surplus"]}
    )
    best = summary["best"]
    if best is not None:
        tracking.log_parent_metrics({"best_val_mae": best["value"]})
        tracking.set_parent_tags(
            {"best.trial": best["number"], **{f"best.{k}": v for k, v in best["params"].items()}}
        )
    tracking.end_parent("FINISHED")
    return StudyResult(
        name=study.study_name,
        storage=display_url(options.storage),
        n_trials=n_trials,
        counts=counts,
        best=best,
        parent_run_id=tracking.parent_id,
        files=files,
    )


def strategy_specs(spec: StudySpec, strategies: list[str]) -> list[StudySpec]:
    """One study per strategy, ``<name>-<strategy>``, with the same search space and budget."""
    known = PAPER_STRATEGIES
    unknown = [s for s in strategies if s not in known]
    if unknown or not strategies:
        raise StudyConfigError(f"--strategy takes a comma list of {known}, got {strategies}")
    return [spec.model_copy(update={"name": f"{spec.name}-{strategy}", "strategy": strategy}) for strategy in strategies]
