"""MLflow tracking of training runs; the only module that talks to MLflow.

The default store is SQLite at ``<base>/mlflow/mlflow.db`` (MLflow 3 refuses plain file stores), with
artifacts in ``<base>/mlflow/artifacts``; ``<base>`` is the folder of the command's manifest, else the
working directory, never the package's folder (``default_base``). ``MLFLOW_TRACKING_URI`` or an
explicit URI wins.
Runs are driven through ``MlflowClient`` with explicit run ids rather than MLflow's global active
run, so nested runs (a parent per experiment, children per training) work from any thread.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "cgat"
PARENT_TAG = "mlflow.parentRunId"
PRETRAIN_TAG = "cgat.pretrain_run_id"
_BATCH = 100  # MLflow's limit of params per log_batch call


STORE_DIR = "mlflow"  # the folder of the default stores, under the base
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/\s]*@")
_QUERY_SECRET = re.compile(r"(?i)(?P<head>[?&;](?:password|passwd|pwd|secret|token)=)[^&;\s]*")


def default_base(manifest: str | Path | None = None) -> Path:
    """The folder default paths hang off: the manifest's folder, so each project keeps its own store,
    runs and reports, else the working directory; never the package's folder (site-packages when
    installed)."""
    if manifest is not None:
        return Path(manifest).expanduser().resolve().parent
    return Path.cwd()


def default_tracking_uri(base: Path | None = None) -> str:
    """The SQLite store under ``base`` (absolute, so a relative base does not move with the cwd)."""
    folder = Path(base).absolute() if base is not None else default_base()
    return f"sqlite:///{(folder / STORE_DIR / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(uri: str | None = None, base: Path | None = None) -> str:
    """An explicit URI, else ``MLFLOW_TRACKING_URI``, else the SQLite store under ``base`` (default: cwd);
    a bare ``postgresql://`` one names the installed driver (``with_driver``)."""
    return with_driver(uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(base))


def with_driver(url: str) -> str:
    """A bare ``postgresql://`` (or ``postgres://``) URL with the installed driver named: SQLAlchemy 2.1
    reads a bare one as psycopg 3, while the project installs psycopg2 (``psycopg2-binary``)."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("postgresql", "postgres"):
        return url
    return f"postgresql://{rest}" if _has_psycopg3() else f"postgresql+psycopg2://{rest}"


@functools.cache
def _has_psycopg3() -> bool:  # with psycopg 3 the bare scheme works as it is
    return importlib.util.find_spec("psycopg") is not None


def redact_uri(text: str) -> str:
    """``text`` (a URI, or a message holding URIs) with every password as ``***``:
    ``postgresql://bench:s3cret@db/x`` -> ``postgresql://bench:***@db/x``, ``?password=...`` too. Safe
    for folder names, logs and files others read."""
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['head']}***", text)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (a relative one against the cwd, as SQLite opens
    it); None for other stores and in-memory SQLite."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    if not path.name:
        return None
    return path if path.is_absolute() else Path.cwd() / path


ARTIFACT_ROOT_ENV = "CGAT_ARTIFACT_ROOT"


def _artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite file store; a tracking server chooses its own; a database store
    reached directly (postgresql://...) uses $CGAT_ARTIFACT_ROOT (any MLflow artifact URI, shared by
    every machine on that database), else mlflow/artifacts in the working directory."""
    db_path = sqlite_path(uri)
    if db_path is not None:
        return (db_path.parent / "artifacts").as_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return os.environ.get(ARTIFACT_ROOT_ENV) or (Path.cwd() / STORE_DIR / "artifacts").as_uri()


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


# MLflow 3's UI opens an experiment in its model-training view (runs, metrics, charts) rather than its
# GenAI view (traces, prompts) when the experiment says what it holds.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


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
            return client.create_experiment(name, artifact_location=_artifact_root(uri), tags=dict(EXPERIMENT_TAGS))
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

    def log_missing_epochs(self, epochs: Mapping[int, Mapping[str, float]]) -> list[int]:
        """Log the epochs (epoch -> metrics) that the run lacks and return them: a process killed
        between an epoch's checkpoint and its logging resumes after an epoch MLflow never saw."""
        logged: dict[str, set[int]] = {}
        missing = []
        for epoch, metrics in sorted(epochs.items()):
            for name in metrics:
                if name not in logged:
                    logged[name] = {m.step for m in self.client.get_metric_history(self.run_id, name)}
            absent = {name: value for name, value in metrics.items() if epoch not in logged[name]}
            if absent:
                self.log_epoch(epoch, absent)
                missing.append(epoch)
        return missing

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
