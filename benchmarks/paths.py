"""Default paths of a command: they follow the user, not the install. The store
(``mlflow/mlflow.db``), ``runs/`` and the reports lie beside the command's manifest, or in the
working directory for a command without one; a report goes beside the store it reads."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from benchmarks.summary import SHARED_DATA_ENV
from cgat_dgl.training.tracking import STORE_DIR, default_base, redact_uri, resolve_tracking_uri, sqlite_path

DEFAULT_STORE_NAME = "mlflow.db"
_SLUG_MAX = 80


@dataclass(frozen=True)
class CommandPaths:
    base: Path  # the manifest's folder, else the working directory
    tracking_uri: str
    work_dir: Path  # checkpoints and run locks
    report_root: Path  # reports go to <report_root>/<name>/


def command_paths(
    manifest: Path | None,
    tracking_uri: str | None = None,
    work_dir: Path | None = None,
    report_dir: Path | None = None,
) -> CommandPaths:
    """The paths of a command: explicit options win (and MLFLOW_TRACKING_URI for the store); the rest
    lie beside the manifest (else in the cwd), so two projects never share a store, runs or reports."""
    base = default_base(manifest)
    uri = resolve_tracking_uri(tracking_uri, base)
    return CommandPaths(
        base=base,
        tracking_uri=uri,
        work_dir=work_dir if work_dir is not None else base / "runs",
        report_root=report_dir if report_dir is not None else report_root(uri, base),
    )


def report_root(tracking_uri: str, base: Path) -> Path:
    """Beside a SQLite store (``reports/``, or ``<stem>-reports/`` for a file not named mlflow.db, so
    two stores in one folder keep apart); for a server store, ``<base>/mlflow/reports/<store slug>/``."""
    database = sqlite_path(tracking_uri)
    if database is not None:
        folder = "reports" if database.name == DEFAULT_STORE_NAME else f"{database.stem}-reports"
        return database.parent / folder
    return base / STORE_DIR / "reports" / store_slug(tracking_uri)


def store_slug(tracking_uri: str) -> str:
    """A folder name for a store: scheme, host and path of its URI, never its user or password
    (``postgresql://u:pw@db:5432/cgat`` -> ``postgresql-db-5432-cgat``); a long one ends in a hash."""
    redacted = redact_uri(tracking_uri)
    scheme, _, rest = redacted.partition("://")
    authority, _, path = rest.partition("/")
    text = f"{scheme}-{authority.rpartition('@')[2]}-{path.partition('?')[0]}"
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.") or "store"
    if len(slug) > _SLUG_MAX:
        slug = slug[: _SLUG_MAX - 9].rstrip("-.") + "-" + hashlib.sha1(redacted.encode()).hexdigest()[:8]
    return slug


def report_name(profile: str | None, seeds: list[int] | None = None, suites: list[str] | None = None,
                splits: list[int] | None = None) -> str:
    """``cpu``, ``cpu-seeds-0-1-2``, ``cpu-strategies``, ``cpu-split-1``: two selections of one store never
    share a folder."""
    name = profile or "all"
    if seeds is not None:
        name += "-seeds-" + "-".join(map(str, seeds))
    if suites:
        name += "-" + "-".join(suites)
    if splits is not None:
        name += "-split-" + "-".join(map(str, splits))
    return name


def data_path_for(argument: Path | None, manifest_data_path: Path) -> Path:
    """--data, else $CGAT_SHARED_DATA, else the manifest's data.path (relative to the manifest)."""
    if argument is not None:
        path = argument
    elif os.environ.get(SHARED_DATA_ENV):
        path = Path(os.environ[SHARED_DATA_ENV])
    else:
        path = manifest_data_path
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path} (pass --data or set ${SHARED_DATA_ENV})")
    return path
