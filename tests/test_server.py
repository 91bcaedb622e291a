"""``cgat-bench server``: a local PostgreSQL and an MLflow tracking server that starts, serves runs
(and Optuna, and claims, through the printed URLs) and stops; and over a database elsewhere, with its
password kept out of the output, the server's arguments and what MLflow stores."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from benchmarks.server import LocalPostgres, add_server_parser, port_open, postgres_bin
from benchmarks.store import Store
from benchmarks.work_claims import DatabaseClaims
from cgat_dgl.training.tracking import redact_uri
from test_work_claims import PASSWORD, free_port, new_database, postgres  # noqa: F401  (postgres: a fixture)


def server(*argv: str) -> int:
    """The subcommand through a parser of its own (cgat-bench's adds it the same way)."""
    parser = argparse.ArgumentParser(prog="cgat-bench")
    add_server_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["server", *argv])
    return args.handler(args)


def _line(out: str, label: str) -> str:
    found = [line.split(label, 1)[1].split()[0] for line in out.splitlines() if line.startswith(label)]
    assert found, f"no {label!r} line in:\n{out}"
    return found[0]


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """A folder the postgres user can reach (pytest's own temporary folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="cgat-server-"))
    root.chmod(0o755)
    yield root
    server("--stop", "--dir", str(root))  # whatever a failing test left running
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_server_starts_serves_runs_and_stops(server_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, db_port = free_port(), free_port()
    artifacts = server_dir / "artifacts"
    common = ["--dir", str(server_dir), "--port", str(port), "--db-port", str(db_port)]
    assert server(*common, "--artifacts-destination", str(artifacts)) == 0
    out = capsys.readouterr().out
    tracking = _line(out, "tracking URI:")
    database = _line(out, "database URL:")
    storage = _line(out, "Optuna --storage:")
    assert tracking == f"http://127.0.0.1:{port}" and f"export MLFLOW_TRACKING_URI={tracking}" in out
    assert database.startswith("postgresql+psycopg2://") and f":{db_port}/" in database
    assert (server_dir / "data" / "PG_VERSION").is_file()

    # MLflow through the server: a run, its param and an artifact (stored in --artifacts-destination).
    client = MlflowClient(tracking)
    experiment = client.create_experiment("server-test")
    run = client.create_run(experiment, run_name="through the server")
    client.log_param(run.info.run_id, "lr", "0.001")
    note = server_dir / "note.txt"
    note.write_text("hello")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)
    listed = client.search_runs([experiment])
    assert [r.info.run_name for r in listed] == ["through the server"] and listed[0].data.params == {"lr": "0.001"}
    assert list(artifacts.rglob("note.txt"))
    # The printed URLs serve Optuna and the run claims as they are.
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2
    claims = DatabaseClaims(database)
    with claims.claim("k") as first, claims.claim("k") as second:
        assert first and not second
    claims.engine.dispose()

    # Again while running: the same URLs, nothing restarted.
    assert server(*common) == 0
    again = capsys.readouterr().out
    assert "already running" in again and _line(again, "tracking URI:") == tracking

    assert server("--stop", "--dir", str(server_dir)) == 0
    stopped = capsys.readouterr().out
    assert "stopped the MLflow server" in stopped and "stopped PostgreSQL" in stopped
    assert not port_open(port) and not port_open(db_port)
    assert LocalPostgres(server_dir, db_port, postgres_bin()).running_port() is None
    assert not (server_dir / "server.json").exists()


@pytest.mark.slow
def test_external_database_keeps_its_password_out(
    postgres: LocalPostgres, server_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    url = new_database(postgres, "external_mlflow")
    assert PASSWORD in url
    monkeypatch.setenv("CGAT_DB_URL", url)
    monkeypatch.delenv("CGAT_CLAIMS_DB", raising=False)
    port = free_port()
    assert server("--external", "--dir", str(server_dir), "--port", str(port),
                  "--artifacts-destination", str(server_dir / "artifacts")) == 0
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err
    assert _line(out, "database URL:") == redact_uri(url)
    tracking = _line(out, "tracking URI:")
    state = json.loads((server_dir / "server.json").read_text())
    assert PASSWORD not in json.dumps(state)
    # `ps` shows every process's arguments: none of the server's has the password.
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    group = [p for p in pids if _pgid(p) == state["mlflow_pid"]]
    assert group and all(PASSWORD.encode() not in Path(f"/proc/{p}/cmdline").read_bytes() for p in group)

    # A worker of that server: runs tracked through it, claims in its database (from $CGAT_DB_URL).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    store = Store(None, tmp_path / "work")
    assert isinstance(store.claims, DatabaseClaims) and store.claims.url == url
    parent = store.parent("gap", "smoke", {"cgat.note": "external"})
    with store.claim("run-1") as held:
        assert held
        tracker = store.open_child("run-1", parent, "gap [smoke]", {"cgat.kind": "transfer"})
        tracker.log_params({"data.path": "x.jsonl.gz", "lr": 0.001})
        tracker.end()
    run = store.run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.001"
    for found in (run, store.run(parent)):
        assert not any(PASSWORD in text for text in [*found.data.params.values(), *found.data.tags.values()])
    assert not (tmp_path / "work" / "locks").exists()

    assert server("--stop", "--dir", str(server_dir)) == 0
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err and not port_open(port)


def _pgid(pid: str) -> int | None:
    try:
        return os.getpgid(int(pid))
    except OSError:
        return None


def test_external_database_that_refuses_is_reported_without_its_password(
    postgres: LocalPostgres, server_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = new_database(postgres, "external_refused", password="not-" + PASSWORD)
    monkeypatch.setenv("CGAT_DB_URL", wrong)
    assert server("--external", "--dir", str(server_dir), "--port", str(free_port())) == 1
    out, err = capfd.readouterr()
    assert "cannot connect to postgresql+psycopg2://bench:***@127.0.0.1" in err and "password" in err
    assert PASSWORD not in out + err
    monkeypatch.delenv("CGAT_DB_URL")
    assert server("--external", "--dir", str(server_dir)) == 1
    assert "CGAT_DB_URL" in capfd.readouterr().err
