"""MLflow tracking of training runs; the only module that talks to MLflow.

The default store is SQLite under the repository's ``mlflow/`` folder (MLflow 3 refuses plain file
stores), with artifacts in ``mlflow/artifacts``; ``MLFLOW_TRACKING_URI`` or an explicit URI wins.
Runs are driven through ``MlflowClient`` with explicit run ids rather than MLflow's global active
run, so nested runs (a parent per experiment, children per training) work from any thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXPERIMENT = "cgat"
PARENT_TAG = "mlflow.parentRunId"
PRETRAIN_TAG = "cgat.pretrain_run_id"
_BATCH = 100  # MLflow's limit of params per log_batch call


def default_tracking_uri() -> str:
    return f"sqlite:///{(REPO_ROOT / 'mlflow' / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite file store; other stores (servers) choose their own."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    if db_path is None or not db_path.name:
        return None
    if not db_path.is_absolute():
        db_path = Path.cwd() / db_path
    return (db_path.parent / "artifacts").as_uri()


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"depth": 5}}`` -> ``{"model.depth": "5"}``; lists and None become their text."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class Tracker:
    """One MLflow run. Use as a context manager; ``child`` opens a nested run under it."""

    def __init__(
        self,
        run_name: str | None = None,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        tracking_uri: str | None = None,
        parent: "Tracker | str | None" = None,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        """Start a new run, or with ``run_id`` continue an existing one (see ``attach``)."""
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.experiment_id = run.info.experiment_id
            self.experiment = self.client.get_experiment(self.experiment_id).name
            self.run_id = run_id
        else:
            self.experiment_id = self.experiment_id_for(experiment, self.tracking_uri)
            self.experiment = experiment
            all_tags = dict(tags or {})
            parent_id = parent.run_id if isinstance(parent, Tracker) else parent
            if parent_id:
                all_tags[PARENT_TAG] = parent_id
            self.run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name).info.run_id
        self._ended = False

    @classmethod
    def attach(cls, run_id: str, *, tracking_uri: str | None = None) -> "Tracker":
        """A tracker logging into an existing run (e.g. a resumed training)."""
        return cls(tracking_uri=tracking_uri, run_id=run_id)

    @staticmethod
    def experiment_id_for(name: str, tracking_uri: str | None = None) -> str:
        """The id of the named experiment, created (artifacts beside a SQLite store) if missing."""
        uri = resolve_tracking_uri(tracking_uri)
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=_artifact_root(uri))
        except Exception:  # created meanwhile by a concurrent process
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def child(self, run_name: str | None = None, tags: Mapping[str, str] | None = None) -> "Tracker":
        return Tracker(run_name, experiment=self.experiment, tracking_uri=self.tracking_uri, parent=self, tags=tags)

    # --- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flattened params; ones already logged with the same value are skipped (a resumed run
        logs its config again), and a changed value is kept as it was first logged, with a warning."""
        existing = self.client.get_run(self.run_id).data.params
        items = []
        for key, value in flatten(params).items():
            value = value[:6000]
            if key not in existing:
                items.append(Param(key, value))
            elif existing[key] != value:
                log.warning("run %s: param %s stays %r (now %r)", self.run_id, key, existing[key], value)
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH])

    def log_config(
        self,
        model: Mapping[str, Any] | None = None,
        train: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        sections = {"model": model, "train": train, "data": data}
        self.log_params({name: dict(values) for name, values in sections.items() if values})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.log_metrics(metrics, step=epoch)

    def log_test(self, metrics: Mapping[str, float]) -> None:
        self.log_metrics({f"test_{k}": v for k, v in metrics.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_pretrain_run(self, run_id: str) -> None:
        """Link a transfer run to the run that produced its starting weights."""
        self.set_tags({PRETRAIN_TAG: run_id})
        self.log_params({"pretrain_run_id": run_id})

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_artifacts(self, paths: Iterable[Path | str], artifact_path: str | None = None) -> None:
        for path in paths:
            self.log_artifact(path, artifact_path)

    # --- lifecycle -----------------------------------------------------------------------------
    def end(self, status: str = "FINISHED") -> None:
        if not self._ended:
            self.client.set_terminated(self.run_id, status=status)
            self._ended = True

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt) or exc_type.__name__ == "TrialPruned":
            self.end("KILLED")
        else:
            self.end("FAILED")
