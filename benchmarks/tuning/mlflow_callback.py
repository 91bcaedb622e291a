"""MLflow tracking of a study: one parent run per study, one nested child run per trial.

The child run of a trial carries the trial's parameters, the trainer's per-epoch metrics and, once
the trial ends, its Optuna state as the tag ``optuna.state``: COMPLETE ends the run FINISHED,
PRUNED ends it KILLED, FAIL ends it FAILED. A trial whose worker died is closed the same way by the
worker that finds it stale. Parent lookups go by tag, so restarts and other workers share one parent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from cgat_dgl.training.tracking import Tracker, resolve_tracking_uri

STUDY_TAG = "cgat.study"
TRIAL_TAG = "cgat.trial"
STATE_TAG = "optuna.state"
PARENT_FLAG = "cgat.parent"
RUN_ID_ATTR = "mlflow_run_id"  # trial user attribute: the trial's child run

END_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


class StudyTracking:
    """The study's parent run, and an Optuna callback that closes the child runs of finished trials."""

    def __init__(
        self,
        study_name: str,
        *,
        experiment: str,
        tracking_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.study_name = study_name
        self.experiment = experiment
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.tags = {STUDY_TAG: study_name, **dict(tags or {})}
        self.params = dict(params or {})
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._parent_id: str | None = None
        self._trials: dict[int, Tracker] = {}

    # --- the study's parent run -------------------------------------------------------------------
    @property
    def parent_id(self) -> str:
        if self._parent_id is None:
            self._parent_id = self._open_parent()
        return self._parent_id

    def _find_parents(self) -> list[str]:
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{self.study_name}' and tags.`{PARENT_FLAG}` = '1'",
            order_by=["attributes.start_time ASC"],
            max_results=50,
        )
        # Ties in start time are broken by run id, the same way in every worker.
        runs = sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))
        return [run.info.run_id for run in runs]

    def _open_parent(self) -> str:
        found = self._find_parents()
        if found:
            parent_id = found[0]
            self.client.update_run(parent_id, status="RUNNING")
            return parent_id
        run = Tracker(
            f"study {self.study_name}",
            experiment=self.experiment,
            tracking_uri=self.tracking_uri,
            tags={PARENT_FLAG: "1", "cgat.kind": "study", **self.tags},
        )
        if self.params:
            run.log_params(self.params)
        # Two workers starting together may both have created a parent: all keep the oldest.
        found = self._find_parents()
        if found and found[0] != run.run_id:
            self.client.delete_run(run.run_id)
            return found[0]
        return run.run_id

    def set_parent_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_parent_metrics(self, metrics: Mapping[str, float]) -> None:
        stamp = int(time.time() * 1000)
        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])

    def log_parent_artifact(self, path: Path, artifact_path: str = "study") -> None:
        self.client.log_artifact(self.parent_id, str(path), artifact_path=artifact_path)

    def end_parent(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # --- the trials' child runs ---------------------------------------------------------------------
    def open_trial(self, trial: optuna.Trial, params: Mapping[str, Any], tags: Mapping[str, str]) -> Tracker:
        tracker = Tracker(
            f"{self.study_name} trial {trial.number}",
            experiment=self.experiment,
            tracking_uri=self.tracking_uri,
            parent=self.parent_id,
            tags={**self.tags, "cgat.kind": "tuning-trial", TRIAL_TAG: str(trial.number), STATE_TAG: "RUNNING", **tags},
        )
        tracker.log_params(params)
        trial.set_user_attr(RUN_ID_ATTR, tracker.run_id)
        self._trials[trial.number] = tracker
        return tracker

    def finish_trial(self, number: int, state: TrialState, value: float | None = None, error: str | None = None) -> None:
        tracker = self._trials.pop(number, None)
        if tracker is None:  # not opened in this process (e.g. a trial declined before training)
            return
        tags: dict[str, str] = {STATE_TAG: state.name}
        if error:
            tags["cgat.error"] = error[:4000]
        tracker.set_tags(tags)
        if value is not None:
            tracker.log_metrics({"objective": value})
        tracker.end(END_STATUS.get(state, "FAILED"))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback, run after each trial of this process."""
        value = trial.value if trial.state == TrialState.COMPLETE else None
        self.finish_trial(trial.number, trial.state, value)

    def on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Close the run of a trial whose worker died (the storage has just marked it FAIL)."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if not run_id:
            return
        run = self.client.get_run(run_id)
        if run.info.status != "RUNNING" or run.data.tags.get(TRIAL_TAG) != str(trial.number):
            return  # already closed, or the attribute was inherited from the trial this one retried
        self.client.log_batch(
            run_id,
            tags=[RunTag(STATE_TAG, TrialState.FAIL.name), RunTag("cgat.error", "the worker stopped sending heartbeats")],
        )
        self.client.set_terminated(run_id, status="FAILED")
