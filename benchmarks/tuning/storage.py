"""The Optuna storage of the studies: an RDB shared by every worker, with heartbeats.

A worker writes a heartbeat for its running trial; a trial whose heartbeat is older than the grace
period belongs to a dead worker: the next worker to look marks it FAIL and enqueues a copy with the
same parameters, so a killed worker's trial is retried rather than lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import warnings

import optuna
import sqlalchemy.engine
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from cgat_dgl.training.tracking import STORE_DIR, default_base, with_driver

StaleTrialHook = Callable[[optuna.Study, FrozenTrial], None]


def default_storage_url(base: Path | None = None) -> str:
    """SQLite beside the default MLflow store, under ``base`` (the manifest's folder; default: the
    working directory), so each project's studies stay with its runs."""
    folder = Path(base).absolute() if base is not None else default_base()
    return f"sqlite:///{(folder / STORE_DIR / 'optuna.db').as_posix()}"


def display_url(url: str | None) -> str:
    """The storage URL without its password, for logs, errors and run parameters."""
    return sqlalchemy.engine.make_url(url or default_storage_url()).render_as_string(hide_password=True)


@dataclass(frozen=True)
class HeartbeatSettings:
    interval_s: int = 60
    grace_s: int = 180  # several intervals, so a busy worker is not taken for dead
    max_retry: int | None = 3  # retries of one trial whose workers keep dying

    def __post_init__(self) -> None:
        if self.interval_s < 1:
            raise ValueError(f"heartbeat interval must be at least 1 s, got {self.interval_s}")
        if self.grace_s <= self.interval_s:
            raise ValueError(f"grace period ({self.grace_s} s) must exceed the heartbeat interval ({self.interval_s} s)")


def open_storage(
    url: str | None, heartbeat: HeartbeatSettings = HeartbeatSettings(), on_stale: StaleTrialHook | None = None
) -> RDBStorage:
    """The RDB storage at ``url`` (default: SQLite under ``./mlflow/``); ``on_stale`` also sees failed stale trials."""
    url = with_driver(url or default_storage_url())
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Several workers and their heartbeat threads write to one file: wait for its lock, do not fail.
        engine_kwargs["connect_args"] = {"timeout": 120}
    with warnings.catch_warnings():
        # Heartbeats and their retry callback are marked experimental; they are what workers rely on.
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        if on_stale is not None:
            on_stale(study, trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat.interval_s,
            grace_period=heartbeat.grace_s,
            heartbeat_stale_trial_callback=stale,
        )


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the trials of dead workers FAIL (which queues their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the original trial when ``trial`` retries a dead worker's trial."""
    # The attribute RetryHeartbeatStaleTrialCallback writes (its reader is marked experimental).
    number = trial.system_attrs.get("failed_trial")
    return int(number) if number is not None else None
