"""The runner's view of the tracking store: runs found again by key, parents, claims between workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from benchmarks.work_claims import Claims, claims_for
from cgat_dgl.training.tracking import Tracker, resolve_tracking_uri

EXPERIMENT = "cgat-bench"
KEY_TAG = "cgat.run_key"
EXPERIMENTS_TAG = "cgat.experiments"  # a run that several experiments share lists them all


@dataclass
class RunState:
    run_id: str
    status: str  # FINISHED, RUNNING, FAILED, KILLED, SCHEDULED
    experiments: tuple[str, ...] = ()  # the manifest experiments the run serves (transfer runs)

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


class Store:
    """The MLflow experiment of the benchmark, and the claims that keep workers from training a run twice.

    Where the claims live follows from the tracking URI (``benchmarks.work_claims.claims_database``):

    * a SQLite file (the default ``mlflow/mlflow.db``): file locks in ``<work_dir>/locks``, enough for
      workers on one machine;
    * a database URL (``postgresql://user@host:5433/cgat_mlflow``): rows of a ``cgat_claims`` table in
      that same database, with heartbeats, so workers on several machines can share it;
    * an MLflow server (``http://host:5000``): the server's database, named by ``claims_db``, else
      ``$CGAT_CLAIMS_DB``, else ``$CGAT_DB_URL`` (``cgat-bench server`` prints the URL to export);
      without one, file locks, with a warning that they only hold on this machine.

    ``claims_db`` / ``$CGAT_CLAIMS_DB`` always win; ``CGAT_CLAIMS_DB=file`` forces file locks. A database
    password belongs in the URL from the environment, in ``$PGPASSWORD`` or ``$CGAT_DB_PASSWORD``
    (copied to ``$PGPASSWORD`` for libpq), never on a command line; URLs are redacted before logging.
    """

    def __init__(
        self, tracking_uri: str | None, work_dir: Path, experiment: str = EXPERIMENT, claims_db: str | None = None
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment = experiment
        self.work_dir = Path(work_dir)
        self.lock_dir = self.work_dir / "locks"
        self.claims: Claims = claims_for(self.tracking_uri, self.lock_dir, claims_db)
        # Creating the experiment through a Tracker-free path keeps it beside the SQLite store.
        self._bootstrap = Tracker.experiment_id_for(experiment, self.tracking_uri)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self._parents: dict[tuple[str, str], str] = {}

    @property
    def experiment_id(self) -> str:
        return self._bootstrap

    def runs_by_key(self) -> dict[str, RunState]:
        """Every keyed run of the experiment; with several for a key (should not happen) the best state wins."""
        found: dict[str, RunState] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` != ''", max_results=1000, page_token=token
            )
            for run in page:
                key = run.data.tags.get(KEY_TAG)
                listed = run.data.tags.get(EXPERIMENTS_TAG) or run.data.tags.get("cgat.experiment", "")
                state = RunState(run.info.run_id, run.info.status, tuple(name for name in listed.split(",") if name))
                if key and (key not in found or state.finished):
                    found[key] = state
            token = page.token
            if not token:
                return found

    def add_experiments(self, state: RunState, experiments: tuple[str, ...]) -> None:
        """Record that a finished run also serves ``experiments`` (an experiment added to the manifest
        that asks for a run another one already trained)."""
        missing = [name for name in experiments if name not in state.experiments]
        if missing:
            self.client.set_tag(state.run_id, EXPERIMENTS_TAG, ",".join((*state.experiments, *missing)))

    def run(self, run_id: str) -> Run:
        return self.client.get_run(run_id)

    def parent(self, name: str, profile: str, tags: dict[str, str]) -> str:
        """The parent run of an experiment under a profile, created once (and looked up once per Store)."""
        if (name, profile) not in self._parents:
            self._parents[name, profile] = self._find_or_create_parent(name, profile, tags)
        return self._parents[name, profile]

    def _find_or_create_parent(self, name: str, profile: str, tags: dict[str, str]) -> str:
        with self.claim(f"parent-{profile}-{name}", wait=True):
            existing = self.client.search_runs(
                [self.experiment_id],
                filter_string=(
                    f"tags.`cgat.parent` = '1' and tags.`cgat.experiment` = '{name}' and tags.`cgat.profile` = '{profile}'"
                ),
                max_results=1,
            )
            if existing:
                found = existing[0].info
                if found.status == "RUNNING":  # its creator was killed before finishing it
                    self.client.set_terminated(found.run_id, status="FINISHED")
                return found.run_id
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{name} [{profile}]",
                tags={"cgat.parent": "1", "cgat.experiment": name, "cgat.profile": profile, **tags},
            )
            # Parents only group their children; they are finished as soon as they exist.
            self.client.set_terminated(run.info.run_id, status="FINISHED")
            return run.info.run_id

    def open_child(self, key: str, parent_id: str, name: str, tags: dict[str, str]) -> Tracker:
        """The child run for ``key``: the existing unfinished one (resumed) or a new one."""
        existing = self.runs_by_key().get(key)
        if existing is not None:
            self.client.update_run(existing.run_id, status="RUNNING", name=name)
            return Tracker.attach(existing.run_id, tracking_uri=self.tracking_uri)
        return Tracker(
            name,
            experiment=self.experiment,
            tracking_uri=self.tracking_uri,
            parent=parent_id,
            tags={KEY_TAG: key, **tags},
        )

    @contextmanager
    def claim(self, key: str, wait: bool = False) -> Iterator[bool]:
        """An exclusive claim on ``key`` between workers (released when the holder exits, or, for
        database claims, taken over once a dead holder's heartbeat is stale). Yields whether it is held;
        ``wait`` blocks until it is."""
        with self.claims.claim(key, wait=wait) as held:
            yield held


def close_interrupted_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[str]:
    """Mark the RUNNING runs matching ``filter_string`` KILLED and return their ids: one-shot runs (a
    report) whose process died while logging; the caller is about to make their successor."""
    stale = client.search_runs([experiment_id], filter_string=f"{filter_string} and attributes.status = 'RUNNING'")
    for run in stale:
        client.set_tag(run.info.run_id, "cgat.ended_by", "interrupted; closed when the next one started")
        client.set_terminated(run.info.run_id, status="KILLED")
    return [run.info.run_id for run in stale]


def run_status_counts(states: dict[str, RunState], keys: list[str]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for key in keys:
        status = states[key].status if key in states else "NEW"
        counts[status] = counts.get(status, 0) + 1
    return counts
