"""Run claims in a PostgreSQL table: one winner between processes, a dead holder's claim taken over
after its heartbeat goes stale, two runner workers training no run twice, and a database password
that never reaches MLflow's params, tags or the output.

A throwaway PostgreSQL cluster serves the module (initdb + pg_ctl in a temporary folder, as the
``postgres`` user when the tests run as root). If it cannot start, the tests fail with the reason:
``make test`` installs PostgreSQL, so its absence is a broken setup, not a reason to skip.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from benchmarks.server import LocalPostgres, export_password_env, postgres_bin
from benchmarks.store import KEY_TAG, Store
from benchmarks.work_claims import DatabaseClaims, FileClaims, claims_database, claims_for
from cgat_dgl.training.tracking import redact_uri, resolve_tracking_uri, with_driver
from test_runner import small_data, write_manifest  # noqa: F401  (small_data is a fixture used below)

REPO = Path(__file__).resolve().parents[1]
USER = "bench"
PASSWORD = "pw-" + secrets.token_hex(8)  # random, so no other text contains it by chance


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A fresh cluster on a free port whose TCP logins need a password (scram-sha-256), with a
    role ``bench`` that has one; stopped and deleted at the end of the session."""
    root = Path(tempfile.mkdtemp(prefix="cgat-pg-"))
    root.chmod(0o755)  # the postgres user must reach data/ when the tests run as root
    cluster = LocalPostgres(root, free_port(), Path("."), durable=False)
    try:
        cluster.bin_dir = postgres_bin(install=True)
        cluster.init(auth_host="scram-sha-256")
        cluster.start()
        cluster.ensure_role(USER, password=PASSWORD)
    except Exception as error:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL could not start for the tests: {error}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def new_database(cluster: LocalPostgres, name: str, password: str | None = PASSWORD) -> str:
    """A new database owned by ``bench``; its URL, with the password unless ``password`` is None."""
    cluster.execute("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
    cluster.ensure_database(name, USER)
    return cluster.url(USER, name, password)


# --- which claims, and redaction (no database) ---------------------------------------------------
def test_claims_follow_the_tracking_uri(tmp_path: Path) -> None:
    pg = "postgresql+psycopg2://bench@db:5432/cgat_mlflow"
    assert claims_database("sqlite:////x/mlflow.db", environ={}) is None
    assert claims_database(pg, environ={}) == pg
    assert claims_database("http://127.0.0.1:5000", environ={}) is None
    assert claims_database("http://127.0.0.1:5000", environ={"CGAT_DB_URL": pg}) == pg
    assert claims_database("https://mlflow.example", environ={"CGAT_CLAIMS_DB": pg, "CGAT_DB_URL": "other"}) == pg
    assert claims_database(pg, environ={"CGAT_CLAIMS_DB": "file"}) is None
    assert claims_database("sqlite:////x/mlflow.db", "sqlite:////x/claims.db", environ={}) == "sqlite:////x/claims.db"
    assert isinstance(claims_for("sqlite:////x/mlflow.db", tmp_path / "locks", environ={}), FileClaims)
    assert isinstance(claims_for(pg, tmp_path / "locks", environ={}), DatabaseClaims)
    assert with_driver("postgresql://u@h/d") == "postgresql+psycopg2://u@h/d"
    assert with_driver("sqlite:///x.db") == "sqlite:///x.db"
    # applied where every store URL is resolved: MLflow's tracking URI and Optuna's storage
    assert resolve_tracking_uri("postgresql://u@h/d") == "postgresql+psycopg2://u@h/d"


def test_redact_hides_passwords_in_any_uri_or_message() -> None:
    assert redact_uri("postgresql+psycopg2://bench:s3cr@t@db:5432/x") == "postgresql+psycopg2://bench:***@db:5432/x"
    assert redact_uri("error at mysql://u:p@h/d, retrying") == "error at mysql://u:***@h/d, retrying"
    assert redact_uri("postgresql://h/d?user=u&password=hunter2&sslmode=require") == (
        "postgresql://h/d?user=u&password=***&sslmode=require"
    )
    for plain in ("postgresql://bench@db/x", "http://127.0.0.1:5000", "sqlite:////tmp/a.db", "a:b@c"):
        assert redact_uri(plain) == plain
    environ = {"CGAT_DB_PASSWORD": "pw"}
    export_password_env(environ)
    assert environ["PGPASSWORD"] == "pw"
    environ = {"CGAT_DB_PASSWORD": "pw", "PGPASSWORD": "mine"}
    export_password_env(environ)
    assert environ["PGPASSWORD"] == "mine"


def test_sqlite_store_keeps_file_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CGAT_CLAIMS_DB", raising=False)
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "work")
    assert isinstance(store.claims, FileClaims)
    with store.claim("k") as first, store.claim("k") as second:
        assert first and not second
    assert (tmp_path / "work" / "locks" / "k.lock").is_file()


def test_claims_in_a_named_sqlite_database(tmp_path: Path) -> None:
    """CGAT_CLAIMS_DB=sqlite:///... : the same table, clock and takeover as on PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    first, second = DatabaseClaims(url, heartbeat_s=0.2, timeout_s=1.0), DatabaseClaims(url, heartbeat_s=0.2, timeout_s=1.0)
    with first.claim("k") as held, second.claim("k") as refused:
        assert held and not refused
        time.sleep(1.5)  # beating: still held past the timeout
        with second.claim("k") as refused:
            assert not refused
    assert first.try_acquire("silent", "gone:1:x")  # a holder that never beats
    assert not second.try_acquire("silent", "other:2:y")
    time.sleep(1.2)
    assert second.try_acquire("silent", "other:2:y") and second.holder("silent") == "other:2:y"


# --- claims against PostgreSQL -------------------------------------------------------------------
CONTENDER = """
import json, sys, time
from contextlib import ExitStack
from pathlib import Path
from benchmarks.work_claims import DatabaseClaims
url, folder, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
claims = DatabaseClaims(url, heartbeat_s=0.5, timeout_s=30)
claims.engine  # connect (and create the table) before the start signal
print("ready", flush=True)
while not (folder / "go").exists():
    time.sleep(0.01)
with ExitStack() as held:
    won = [key for key in [f"run-{i}" for i in range(20)] if held.enter_context(claims.claim(key))]
    print(json.dumps(won), flush=True)
    while not (folder / "release").exists():  # hold every claim until both have tried every key
        time.sleep(0.05)
"""


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, text=True)


def test_two_processes_claiming_the_same_keys_one_wins_each(postgres: LocalPostgres, tmp_path: Path) -> None:
    url = new_database(postgres, "claims_race")
    processes = [_python(CONTENDER, url, str(tmp_path), name) for name in ("a", "b")]
    try:
        assert [p.stdout.readline().strip() for p in processes] == ["ready", "ready"]
        (tmp_path / "go").touch()
        won = [set(json.loads(p.stdout.readline())) for p in processes]
        # every key has exactly one holder, and they hold their rows in the table
        assert won[0].isdisjoint(won[1]) and won[0] | won[1] == {f"run-{i}" for i in range(20)}, won
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            owners = dict(connection.execute(sa.text("SELECT key, owner FROM cgat_claims")).all())
        assert sorted(owners) == sorted(won[0] | won[1])
        pids = {key: int(owner.split(":")[1]) for key, owner in owners.items()}
        for process, keys in zip(processes, won):
            assert {pids[key] for key in keys} <= {process.pid}
        (tmp_path / "release").touch()
        assert [p.wait(timeout=60) for p in processes] == [0, 0]
        with engine.connect() as connection:  # released claims delete their rows
            assert connection.execute(sa.text("SELECT count(*) FROM cgat_claims")).scalar() == 0
        engine.dispose()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


HOLDER = """
import sys, time
from benchmarks.work_claims import DatabaseClaims
with DatabaseClaims(sys.argv[1], heartbeat_s=0.5, timeout_s=3).claim("pretrain-x") as held:
    print("held" if held else "refused", flush=True)
    time.sleep(600)
"""


def test_a_killed_holders_claim_is_taken_over_after_the_timeout(postgres: LocalPostgres) -> None:
    url = new_database(postgres, "claims_stale")
    claims = DatabaseClaims(url, heartbeat_s=0.5, timeout_s=3, poll_s=0.2)
    holder = _python(HOLDER, url)
    try:
        assert holder.stdout.readline().strip() == "held"
        # Alive, it keeps beating: still refused well past the timeout.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with claims.claim("pretrain-x") as held:
                assert not held
            time.sleep(0.3)
        assert claims.holder("pretrain-x").split(":")[1] == str(holder.pid)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        with claims.claim("pretrain-x") as held:
            assert not held  # its last heartbeat is younger than the timeout
        with claims.claim("pretrain-x", wait=True) as held:
            waited = time.monotonic() - killed
            assert held and claims.holder("pretrain-x").split(":")[1] == str(os.getpid())
        assert 2.0 < waited < 10.0, waited
        assert claims.holder("pretrain-x") is None
    finally:
        if holder.poll() is None:
            holder.kill()


def test_waiting_claim_gets_the_key_when_released(postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq's variable: the URL itself carries no password
    claims = DatabaseClaims(new_database(postgres, "claims_wait", password=None), heartbeat_s=0.5, timeout_s=30,
                            poll_s=0.1)
    got: list[float] = []

    def waiter() -> None:
        with claims.claim("parent-smoke-gap", wait=True) as held:
            got.append(time.monotonic() if held else -1.0)

    with claims.claim("parent-smoke-gap") as held:
        assert held
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(1.0)
        assert not got
        released = time.monotonic()
    thread.join(timeout=30)
    assert got and got[0] >= released


# --- two runner workers on an MLflow store in PostgreSQL ----------------------------------------
@pytest.mark.slow
def test_two_workers_on_postgres_train_each_run_once_and_hide_the_password(
    postgres: LocalPostgres, small_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.manifest import load_manifest
    from benchmarks.runner import Runner, RunnerOptions

    monkeypatch.delenv("CGAT_CLAIMS_DB", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = new_database(postgres, "runner_workers")  # the password in the URL, as from $CGAT_DB_URL
    assert PASSWORD in url
    # Artifacts of a database store without a server go where its experiment says: here, not ./mlruns.
    MlflowClient(url).create_experiment("cgat-bench", artifact_location=(tmp_path / "artifacts").as_uri())
    manifest_path = write_manifest(tmp_path, strategies="[none, full]", sizes="[20]")
    options = RunnerOptions(profile="smoke", data_path=small_data, work_dir=tmp_path / "work", tracking_uri=url,
                            progress=True, poll_s=0.5, workers=2)
    runner = Runner(load_manifest(manifest_path), options)
    assert isinstance(runner.store.claims, DatabaseClaims)
    keys = [spec.key for spec in runner.specs]
    assert len(keys) == 5
    outcome = runner.run()
    out, err = capfd.readouterr()
    assert not outcome.failed, outcome.failed
    # Trained once each: by the workers' own account, and in the store.
    assert sorted(outcome.done) == sorted(keys), outcome.done
    client = MlflowClient(url)
    experiments = client.search_experiments()
    runs = [run for e in experiments for run in client.search_runs([e.experiment_id], max_results=1000)]
    per_key = Counter(run.data.tags[KEY_TAG] for run in runs if KEY_TAG in run.data.tags)
    assert per_key == Counter(keys)
    assert all(run.info.status == "FINISHED" for run in runs)
    parents = Counter(run.info.run_name for run in runs if run.data.tags.get("cgat.parent") == "1")
    assert sorted(parents.values()) == [1, 1, 1], parents
    assert out.count("[run] ") == 5 and out.count("[done] ") == 5, out
    # Into a file (not a terminal), each worker writes one line per epoch, naming its run.
    epoch_lines = [line for line in err.splitlines() if "] epoch " in line]
    assert {line.split("]")[0].lstrip("[") for line in epoch_lines} == set(keys), err
    assert all(re.match(r"^\[(pre|tr)-[0-9a-f]{16}\] epoch \d+/2: ", line) for line in epoch_lines), epoch_lines
    # The claims went through the database, not the file system, and were all released.
    assert not (tmp_path / "work" / "locks").exists()
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM cgat_claims")).scalar() == 0
    engine.dispose()
    # The password is nowhere in what MLflow keeps or the workers printed.
    for run in runs:
        texts = [run.info.run_name or "", *run.data.params.values(), *run.data.tags.values(), *run.data.params,
                 *run.data.tags]
        assert not any(PASSWORD in text for text in texts), run.info.run_id
    for experiment in experiments:
        assert PASSWORD not in json.dumps([experiment.name, experiment.artifact_location, experiment.tags])
    assert PASSWORD not in out and PASSWORD not in err
