"""Read the benchmark's training runs back from the MLflow tracking store."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from benchmarks.store import EXPERIMENTS_TAG
from cgat_dgl.versions import results_label, software_label

TAG_PREFIX = "cgat."
TAG_COLUMNS = ("kind", "experiment", "profile", "strategy", "source", "target", "task_type", "seed")
CORE_METRICS = ("test_mae", "test_rmse", "test_r2", "best_val_mae")
# Structure passes: this run's own, and with what its starting weights were trained on (NaN on runs
# from before the runner logged them).
COST_METRICS = ("trained_structures", "total_trained_structures")
# How a run ended (early stopping): its best epoch (0-based) and epochs trained, and whether it stopped
# on a validation plateau or at its epoch cap. NaN / None on runs from before early stopping.
STOP_METRICS = ("best_epoch", "epochs_run", "train_seconds")
STOP_TAGS = ("stop_reason", "converged")
DEFAULT_SUITE = "paper"  # runs from before the cgat.suite tag belong to the paper's suite
SUBSET_PREFIX = "test_mae_"
HISTORY_METRICS = ("train_mae", "val_mae", "lr")
RUN_COLUMNS = (
    "run_id",
    *TAG_COLUMNS,
    "train_size",
    "pretrain_size",
    "pretrain_run_id",
    "pretrain_seed",  # the seed of the pre-trained model a transfer starts from (-1: none; a pre-training: its own)
    "joint_run_id",  # multifidelity_ft: the joint run it fine-tunes
    "source_ratio",  # multifidelity: source structures drawn per target structure and epoch
    "suite",
    "split_seed",
    "run_key",  # the manifest runner's key: which settings and data made the run
    "software",
    "results_version",  # the part of the software that run keys hold: cgat_dgl, torch, dgl  # the code and package versions that produced the run (cgat_dgl.versions)
    "machine",
    "threads",
    "duration_s",
    "start_time",  # epoch milliseconds, as MLflow stores them
    "end_time",
    *CORE_METRICS,
    *COST_METRICS,
    *STOP_METRICS,
    *STOP_TAGS,
)
# What says where and when a run was made rather than what it computed: run ids, commit, machine, times.
PROVENANCE_COLUMNS = ("run_id", "pretrain_run_id", "joint_run_id", "software", "machine", "duration_s",
                      "start_time", "end_time", "train_seconds")
HISTORY_COLUMNS = ("epoch", *HISTORY_METRICS)
_PAGE = 1000


def _int_param(run: Run, name: str, default: int | None = None) -> int:
    raw = run.data.params.get(name)
    if raw is None:
        if default is not None:
            return default
        raise ValueError(f"run {run.info.run_id}: param {name!r} is missing")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"run {run.info.run_id}: param {name!r} = {raw!r} is not a number") from None
    if not value.is_integer() or value < 0:
        raise ValueError(f"run {run.info.run_id}: param {name!r} = {raw!r} is not a non-negative integer")
    return int(value)


def _float_param(run: Run, name: str) -> float:
    """A numeric param, NaN when the run did not log it."""
    raw = run.data.params.get(name)
    if raw is None:
        return math.nan
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"run {run.info.run_id}: param {name!r} = {raw!r} is not a number") from None


TRAINING_KINDS = ("pretrain", "transfer")


def _pretrain_seed(run: Run, row: dict[str, Any]) -> int:
    if row["kind"] == "pretrain":
        return int(row["seed"])
    raw = run.data.tags.get(TAG_PREFIX + "pretrain_seed")
    if raw is None:  # runs from before the tag: every pre-trained model had seed 0
        return 0 if row["pretrain_run_id"] else -1
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"run {run.info.run_id}: tag cgat.pretrain_seed = {raw!r} is not an integer") from None


def _row(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = {"run_id": run.info.run_id}
    for name in TAG_COLUMNS:
        row[name] = tags.get(TAG_PREFIX + name)
    if row["kind"] not in TRAINING_KINDS:
        raise ValueError(f"run {run.info.run_id}: tag cgat.kind = {row['kind']!r}, expected pretrain or transfer")
    try:
        row["seed"] = int(row["seed"]) if row["seed"] is not None else -1
    except ValueError:
        raise ValueError(f"run {run.info.run_id}: tag cgat.seed = {row['seed']!r} is not an integer") from None
    row["train_size"] = _int_param(run, "train_size")
    row["pretrain_size"] = _int_param(run, "pretrain_size", default=0)
    row["pretrain_run_id"] = tags.get(TAG_PREFIX + "pretrain_run_id")
    row["pretrain_seed"] = _pretrain_seed(run, row)
    row["joint_run_id"] = tags.get(TAG_PREFIX + "joint_run_id")
    row["source_ratio"] = _float_param(run, "source_ratio")
    row["suite"] = tags.get(TAG_PREFIX + "suite", DEFAULT_SUITE)
    row["run_key"] = tags.get(TAG_PREFIX + "run_key")
    try:
        row["split_seed"] = int(tags.get(TAG_PREFIX + "split_seed", 0))  # runs from before the tag: split 0
    except ValueError:
        raise ValueError(f"run {run.info.run_id}: tag cgat.split_seed = {tags[TAG_PREFIX + 'split_seed']!r} is not an integer") from None
    row["software"] = software_label(dict(tags))
    row["results_version"] = results_label(dict(tags))
    row["machine"] = tags.get(TAG_PREFIX + "machine", "unrecorded")
    row["threads"] = tags.get(TAG_PREFIX + "torch_threads", "unrecorded")
    start, end = run.info.start_time, run.info.end_time
    row["start_time"], row["end_time"] = start, end
    row["duration_s"] = (end - start) / 1000.0 if start and end else math.nan
    metrics = run.data.metrics
    for name in (*CORE_METRICS, *COST_METRICS, *STOP_METRICS):
        row[name] = metrics.get(name, math.nan)
    if row["kind"] == "pretrain" and math.isnan(row["total_trained_structures"]):
        # a pre-training starts from no other run (a shipped model's run logged no total before 0.5.0)
        row["total_trained_structures"] = row["trained_structures"]
    row["stop_reason"] = tags.get(TAG_PREFIX + "stop_reason")
    converged = tags.get(TAG_PREFIX + "converged")
    row["converged"] = None if converged is None else converged.lower() == "true"
    for name, value in metrics.items():
        if name.startswith(SUBSET_PREFIX):
            row[name] = value
    return row


def _experiments(tags: dict[str, str], experiment: str | None) -> list[str | None]:
    listed = [name for name in tags.get(EXPERIMENTS_TAG, "").split(",") if name]
    return listed or [experiment]


def _history(client: MlflowClient, run_id: str) -> pd.DataFrame:
    series: dict[str, pd.Series] = {}
    for name in HISTORY_METRICS:
        points = client.get_metric_history(run_id, name)
        if points:
            # the last value logged at a step wins, as in MLflow's own UI
            by_step = {int(p.step): p.value for p in sorted(points, key=lambda p: (p.step, p.timestamp))}
            series[name] = pd.Series(by_step, dtype=float)
    frame = pd.DataFrame(series).sort_index()
    frame.index.name = "epoch"
    frame = frame.reset_index()
    for name in HISTORY_COLUMNS:
        if name not in frame:
            frame[name] = pd.Series(dtype=float if name != "epoch" else int)
    return frame[list(HISTORY_COLUMNS)]


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=_PAGE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def collect_runs(
    tracking_uri: str, profile: str | None = None, experiment_name: str = "cgat-bench"
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per finished training run of the benchmark and experiment it serves (``run_id`` repeats
    for a run that several experiments share), and each run's per-epoch history.

    Parent runs (tag ``cgat.parent`` = "1"), Optuna studies and trials (tag ``cgat.study``) and report
    runs (any ``cgat.kind`` but pretrain and transfer) are left out.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ValueError(f"no MLflow experiment named {experiment_name!r} in {tracking_uri}")
    filters = ["attributes.status = 'FINISHED'"]
    if profile is not None:
        filters.append(f"tags.`cgat.profile` = '{profile}'")
    rows: list[dict[str, Any]] = []
    histories: dict[str, pd.DataFrame] = {}
    for run in _search(client, experiment.experiment_id, " and ".join(filters)):
        tags = run.data.tags
        # Only training runs: not parents, Optuna studies and trials, or earlier reports.
        if tags.get("cgat.parent") == "1" or "cgat.study" in tags or tags.get("cgat.kind") not in TRAINING_KINDS:
            continue
        row = _row(run)
        # a run that several experiments asked for (benchmarks.plan) is a row of each of them
        for name in _experiments(tags, row["experiment"]):
            rows.append({**row, "experiment": name})
        histories[run.info.run_id] = _history(client, run.info.run_id)
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS) if not rows else None)
    for name in RUN_COLUMNS:
        if name not in runs:
            runs[name] = pd.Series(dtype=object)
    subset = sorted(c for c in runs.columns if c.startswith(SUBSET_PREFIX))
    runs = runs[list(RUN_COLUMNS) + subset]
    return runs.sort_values(["kind", "experiment", "strategy", "train_size", "seed"]).reset_index(drop=True), histories


PREDICTIONS_ARTIFACT = "predictions/test_predictions.csv"


def collect_test_errors(tracking_uri: str, run_ids: list[str]) -> dict[str, pd.Series]:
    """Per run, the absolute test error of each material (indexed by material id), read from the run's
    ``predictions/test_predictions.csv`` artifact; runs without that artifact are left out."""
    import os
    import tempfile

    # one small file per run: MLflow's per-download progress bars would only fill the log
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking_uri=tracking_uri)
    errors: dict[str, pd.Series] = {}
    with tempfile.TemporaryDirectory(prefix="cgat-report-") as folder:
        for run_id in run_ids:
            listed = {a.path for a in client.list_artifacts(run_id, "predictions")}
            if PREDICTIONS_ARTIFACT not in listed:
                continue
            local = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, folder)
            frame = pd.read_csv(local, dtype={"id": str})
            errors[run_id] = (frame["prediction"] - frame["target"]).abs().set_axis(frame["id"]).sort_index()
    return errors


STUDY_COLUMNS = (
    "study", "run_id", "experiment", "strategy", "source", "target", "task_type", "profile",
    "train_size", "seed", "lr", "weight_decay", "objective", "test_mae", "stop_reason",
)  # fmt: skip


def collect_study_trials(
    tracking_uri: str, profile: str | None = None, experiment_name: str = "cgat-bench"
) -> pd.DataFrame:
    """One row per finished trial of every Optuna study: its learning rate, weight decay, objective
    (the best validation MAE) and test MAE."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return pd.DataFrame(columns=list(STUDY_COLUMNS))
    filters = ["attributes.status = 'FINISHED'", "tags.`cgat.kind` = 'tuning-trial'"]
    if profile is not None:
        filters.append(f"tags.`cgat.profile` = '{profile}'")
    rows = []
    for run in _search(client, experiment.experiment_id, " and ".join(filters)):
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        try:
            seed = int(tags.get(TAG_PREFIX + "seed", params.get("seed", 0)))
            rows.append(
                {
                    "study": tags.get("cgat.study"),
                    "run_id": run.info.run_id,
                    **{name: tags.get(TAG_PREFIX + name) for name in ("experiment", "strategy", "source", "target", "task_type", "profile")},
                    "train_size": _int_param(run, "train_size"),
                    "seed": seed,
                    "lr": float(params["lr"]),
                    "weight_decay": float(params["weight_decay"]),
                    "objective": metrics.get("objective", math.nan),
                    "test_mae": metrics.get("test_mae", math.nan),
                    "stop_reason": tags.get("cgat.stop_reason"),  # absent: a trial from before early stopping
                }
            )
        except (KeyError, ValueError) as error:
            raise ValueError(f"study trial run {run.info.run_id}: {error}") from None
    return pd.DataFrame(rows, columns=list(STUDY_COLUMNS))
