"""``cgat-bench server``: the shared stores on PostgreSQL, and how to reach them without leaking passwords.

Why: SQLite files and file locks serve workers on one machine; workers on several machines, or many
on one, need a database server. One command starts it locally::

    cgat-bench server            # or: make server
    cgat-bench server --stop

It starts a PostgreSQL cluster with its data in ``mlflow/postgres/data`` under the working directory
(git-ignored; ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/*/bin``, installed with
``apt-get install postgresql`` when missing and run as root), listening on 127.0.0.1 only, with a role ``cgat`` (no password: only local
connections are accepted) and two databases: ``cgat_mlflow`` for MLflow's tables and the run claims
(``benchmarks.work_claims``), ``cgat_optuna`` for Optuna, because both keep their schema version in a
table named ``alembic_version`` and cannot share one database. Then an MLflow tracking server on
``http://127.0.0.1:5000`` over ``cgat_mlflow``, serving artifacts from ``mlflow/server-artifacts``.
It prints the tracking URI, the database URL (for the claims, ``CGAT_CLAIMS_DB``) and the URL to pass
to ``cgat-bench tune --storage``. Running it again while both run only prints them again.

**A database that runs elsewhere** (a shared PostgreSQL reachable by every worker machine)::

    export CGAT_DB_URL=postgresql://bench@db.example.org:5432/cgat_mlflow
    export PGPASSWORD=...        # or CGAT_DB_PASSWORD=...; or the password inside CGAT_DB_URL
    cgat-bench server --external [--host 0.0.0.0]   # only the MLflow server, over $CGAT_DB_URL

Credentials come from the environment only, never from a command-line option (``ps`` shows every
process's arguments to every user, shells keep histories): ``$CGAT_DB_URL`` may carry the password,
or it comes from ``$PGPASSWORD`` (read by libpq itself, so by MLflow, Optuna and the claims alike) or
``$CGAT_DB_PASSWORD`` (copied to ``$PGPASSWORD`` when that is unset, see ``export_password_env``).
A URL with a password is handed to the MLflow server in its environment, not its arguments. Every URL
printed or logged passes through ``redact_uri``. Workers then set ``MLFLOW_TRACKING_URI`` to the server,
and find the claims database in ``$CGAT_DB_URL`` (or ``$CGAT_CLAIMS_DB``); Optuna needs a second
database on that server (``--storage``), for the reason above.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.process_groups import stop_process_group
from cgat_dgl.training.tracking import redact_uri, with_driver

# Relative to the working directory (the checkout, for `make server`), like the default SQLite store.
DEFAULT_DIR = Path("mlflow") / "postgres"
DEFAULT_ARTIFACTS = Path("mlflow") / "server-artifacts"
DB_URL_ENV = "CGAT_DB_URL"
PASSWORD_ENV = "CGAT_DB_PASSWORD"
DB_USER = "cgat"
MLFLOW_DB = "cgat_mlflow"
OPTUNA_DB = "cgat_optuna"
STATE_FILE = "server.json"


class ServerError(RuntimeError):
    """Something the user can fix: the message says what (and never holds a password)."""


# --- credentials -------------------------------------------------------------------------------
# One redaction for the whole project (tracking.redact_uri): URIs and messages holding them.


def has_password(uri: str) -> bool:
    return redact_uri(uri) != uri


def export_password_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """``$CGAT_DB_PASSWORD`` as libpq's ``$PGPASSWORD`` (unless that is set): this process and its
    children (workers, the MLflow server) then connect with it while URLs stay password-free."""
    if environ.get(PASSWORD_ENV) and not environ.get("PGPASSWORD"):
        environ["PGPASSWORD"] = environ[PASSWORD_ENV]


# --- PostgreSQL --------------------------------------------------------------------------------
def _version(initdb: Path) -> int:
    name = initdb.parent.parent.name
    return int(name) if name.isdigit() else 0


def postgres_bin(install: bool = False) -> Path:
    """The folder with ``initdb`` and ``pg_ctl`` (the newest under /usr/lib/postgresql, else on PATH);
    with ``install``, as root, ``apt-get install postgresql`` first when there is none."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version)
    if found:
        return found[-1].parent
    if (which := shutil.which("initdb")) and (Path(which).resolve().parent / "pg_ctl").exists():
        return Path(which).resolve().parent
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print("PostgreSQL not found: apt-get install -y postgresql", flush=True)
        command = ["apt-get", "install", "-y", "-q", "postgresql"]
        if subprocess.run(command, env=env).returncode != 0:  # a fresh image has no package lists yet
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
            subprocess.run(command, env=env, check=True)
        return postgres_bin(install=False)
    raise ServerError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): "
        "run `apt-get install -y postgresql` as root (`make postgres-install`)"
    )


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in ``root/data`` on 127.0.0.1:``port``, its socket and log beside its data.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` system user
    (created by Debian's package) and its commands run through ``runuser``. ``durable=False`` turns
    fsync off, for throwaway clusters in tests.
    """

    root: Path
    port: int
    bin_dir: Path
    superuser: str = "postgres"
    durable: bool = True

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    def _owner(self) -> pwd.struct_passwd | None:
        """The system user that owns the cluster when we are root, else None (we own it)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise ServerError("running as root, but there is no `postgres` user to own the cluster") from None

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        owner = self._owner()
        prefix = ["runuser", "-u", owner.pw_name, "--"] if owner else []
        done = subprocess.run([*prefix, *command], cwd=self.root, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise ServerError(f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                              f"{self._log_tail()}")
        return done

    def _log_tail(self, lines: int = 15) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n--- " + str(self.log_path) + "\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def init(self, auth_host: str = "trust") -> None:
        """``initdb`` (once): local socket connections trusted, TCP ones by ``auth_host``."""
        if self.initialized():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        owner = self._owner()
        if owner is not None:
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
            if self._run("test", "-w", str(self.data_dir), check=False).returncode != 0:
                blocked = [p for p in [*reversed(self.data_dir.parents)] if not os.stat(p).st_mode & 0o001]
                raise ServerError(f"user postgres cannot reach {self.data_dir}: not searchable by others: {blocked}")
        command = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser, "-E", "UTF8",
                   "--no-locale", "--auth-local=trust", f"--auth-host={auth_host}"]
        self._run(*command, *([] if self.durable else ["--no-sync"]))

    def running_port(self) -> int | None:
        """The port of the running cluster (from postmaster.pid), or None when it is not running."""
        if not self.initialized() or self._run(str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir),
                                               check=False).returncode != 0:
            return None
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else self.port

    def start(self) -> None:
        """Start the cluster (if it is not running) and wait until it accepts connections."""
        if (port := self.running_port()) is not None:
            self.port = port
            return
        ensure_port_free(self.port, "PostgreSQL (--db-port)")
        # every worker holds a few connections (MLflow's pool, the claims' heartbeats): more than 100
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bin_dir / "pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_path),
                  "-w", "-t", "120", "-o", options)

    def stop(self) -> bool:
        """Stop the cluster; False when it was not running."""
        if self.running_port() is None:
            return False
        self._run(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "120")
        return True

    def execute(self, statement: str, *identifiers: str, value: str | None = None, dbname: str = "postgres") -> list[tuple]:
        """One statement as the superuser over the socket; ``{}`` in ``statement`` take quoted
        ``identifiers``, ``%(value)s`` ``value`` as a bound literal (a name, a password)."""
        import psycopg2
        from psycopg2 import sql

        query = sql.SQL(statement).format(*map(sql.Identifier, identifiers))
        connection = psycopg2.connect(host=str(self.data_dir), port=self.port, user=self.superuser, dbname=dbname)
        try:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(query, {"value": value})
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def ensure_role(self, name: str, password: str | None = None) -> None:
        if not self.execute("SELECT 1 FROM pg_roles WHERE rolname = %(value)s", value=name):
            self.execute("CREATE ROLE {} LOGIN", name)
        if password is not None:
            self.execute("ALTER ROLE {} PASSWORD %(value)s", name, value=password)

    def ensure_database(self, name: str, owner: str) -> None:
        if not self.execute("SELECT 1 FROM pg_database WHERE datname = %(value)s", value=name):
            self.execute("CREATE DATABASE {} OWNER {}", name, owner)

    def url(self, user: str, database: str, password: str | None = None) -> str:
        from sqlalchemy.engine import URL

        made = URL.create("postgresql+psycopg2", user, password, "127.0.0.1", self.port, database)
        return made.render_as_string(hide_password=False)


# --- processes and ports -----------------------------------------------------------------------
def ensure_port_free(port: int, what: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ServerError(f"port {port} for {what} is already taken: choose another") from None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False  # our own child (a test starting the server in-process) that has exited
    except ChildProcessError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"mlflow" in cmdline  # not a recycled pid of something else


def mlflow_command() -> list[str]:
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]


def start_mlflow(
    backend_uri: str, host: str, port: int, artifacts: str, workers: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """The MLflow tracking server in its own session (so ``--stop`` can end it with its workers)."""
    env = dict(os.environ)
    # MLflow 3's job runner (GenAI jobs, a dozen huey processes) has nothing to do for training runs.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = [*mlflow_command(), "server", "--host", host, "--port", str(port), "--workers", str(workers),
               "--artifacts-destination", artifacts]
    if has_password(backend_uri):
        env["MLFLOW_BACKEND_STORE_URI"] = backend_uri  # not an argument: `ps` would show it
    else:
        command += ["--backend-store-uri", backend_uri]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def wait_healthy(process: subprocess.Popen[bytes], port: int, log_path: Path, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ServerError(f"the MLflow server exited while starting; {log_path} ends with:\n{redact_uri(tail)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    stop_process_group(process.pid)
    raise ServerError(f"the MLflow server did not answer on port {port} within {timeout_s:.0f} s (log: {log_path})")


# --- the command -------------------------------------------------------------------------------
def _state_path(folder: Path) -> Path:
    return folder / STATE_FILE


def _read_state(folder: Path) -> dict[str, object] | None:
    path = _state_path(folder)
    return json.loads(path.read_text()) if path.is_file() else None


def _print_urls(state: dict[str, object]) -> None:
    tracking = state["tracking_uri"]
    print(f"tracking URI:     {tracking}")
    if state.get("external"):
        print(f"database URL:     {state['database']}  (from ${DB_URL_ENV})")
        print(f"export MLFLOW_TRACKING_URI={tracking}")
        print(f"claims: workers with ${DB_URL_ENV} set claim runs in that database (or set CGAT_CLAIMS_DB)")
        print("Optuna --storage: a second database on that server (MLflow and Optuna cannot share one)")
    else:
        print(f"database URL:     {state['database']}  (MLflow's tables and the run claims)")
        print(f"Optuna --storage: {state['optuna']}")
        print(f"export MLFLOW_TRACKING_URI={tracking}")
        print(f"export CGAT_CLAIMS_DB={state['database']}")
    print(f"stop with:        cgat-bench server --stop --dir {state['dir']}")


def start(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = _read_state(folder)
    if state is not None and _alive(int(state["mlflow_pid"])) and port_open(int(state["port"])):
        print(f"already running (pid {state['mlflow_pid']})")
        _print_urls(state)
        return 0
    if args.external:
        export_password_env()
        backend = with_driver(os.environ.get(DB_URL_ENV, ""))
        if not backend:
            raise ServerError(f"--external needs the database URL in ${DB_URL_ENV} (its password there, or in "
                              f"$PGPASSWORD / ${PASSWORD_ENV})")
        _check_connects(backend)
        state = {"external": True, "database": redact_uri(backend)}
    else:
        cluster = LocalPostgres(folder, args.db_port, postgres_bin(install=not args.no_install))
        cluster.init()
        cluster.start()
        cluster.ensure_role(DB_USER)
        for name in (MLFLOW_DB, OPTUNA_DB):
            cluster.ensure_database(name, DB_USER)
        backend = cluster.url(DB_USER, MLFLOW_DB)
        print(f"PostgreSQL on 127.0.0.1:{cluster.port}, data in {cluster.data_dir}")
        state = {"external": False, "database": backend, "optuna": cluster.url(DB_USER, OPTUNA_DB),
                 "db_port": cluster.port}
    ensure_port_free(args.port, "the MLflow server (--port)")
    artifacts = Path(args.artifacts_destination)
    artifacts_uri = str(artifacts.resolve()) if "://" not in str(artifacts) else str(artifacts)
    if "://" not in artifacts_uri:
        Path(artifacts_uri).mkdir(parents=True, exist_ok=True)
    log_path = folder / "mlflow-server.log"
    process = start_mlflow(backend, args.host, args.port, artifacts_uri, args.workers, log_path)
    wait_healthy(process, args.port, log_path)
    pid = process.pid
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    state.update(mlflow_pid=pid, port=args.port, tracking_uri=f"http://{shown_host}:{args.port}", dir=str(folder),
                 artifacts=artifacts_uri)
    _state_path(folder).write_text(json.dumps(state, indent=2))
    print(f"MLflow tracking server on port {args.port} (pid {pid}, log {log_path}, artifacts {artifacts_uri})")
    _print_urls(state)
    return 0


def _check_connects(url: str) -> None:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # driver errors name the host, not the password; redact anyway
        raise ServerError(f"cannot connect to {redact_uri(url)}: {redact_uri(str(error)).strip()}") from None


def stop(args: argparse.Namespace) -> int:
    folder = Path(args.dir).resolve()
    state = _read_state(folder)
    if state is not None:
        pid = int(state["mlflow_pid"])
        if _alive(pid):
            stop_process_group(pid)
            print(f"stopped the MLflow server (pid {pid})")
        _state_path(folder).unlink()
    if (folder / "data" / "PG_VERSION").is_file():
        cluster = LocalPostgres(folder, int((state or {}).get("db_port", args.db_port)), postgres_bin())
        if cluster.stop():
            print(f"stopped PostgreSQL ({cluster.data_dir})")
    if state is None:
        print(f"no MLflow server recorded in {folder}")
    return 0


def _server(args: argparse.Namespace) -> int:
    try:
        return stop(args) if args.stop else start(args)
    except (ServerError, subprocess.CalledProcessError) as error:
        print(f"error: {redact_uri(str(error))}", file=sys.stderr)
        if not args.stop:
            print(f"(whatever did start stops with: cgat-bench server --stop --dir {args.dir})", file=sys.stderr)
        return 1


def add_server_parser(commands: argparse._SubParsersAction) -> None:
    """``cgat-bench server``: see the module's docstring."""
    server = commands.add_parser(
        "server", help="start (or --stop) a local PostgreSQL and an MLflow tracking server on it",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server.add_argument("--stop", action="store_true", help="stop the MLflow server and PostgreSQL")
    server.add_argument("--external", action="store_true",
                        help=f"the database runs elsewhere: only start MLflow over ${DB_URL_ENV}")
    server.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="PostgreSQL's data (data/), the server's log and state (default: mlflow/postgres)")
    server.add_argument("--port", type=int, default=5000, help="MLflow server port (default: 5000)")
    server.add_argument("--db-port", type=int, default=5433, help="local PostgreSQL port (default: 5433)")
    server.add_argument("--host", default="127.0.0.1", help="MLflow server interface (default: 127.0.0.1)")
    server.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default: 2)")
    server.add_argument("--artifacts-destination", default=str(DEFAULT_ARTIFACTS),
                        help="folder or URI for the artifacts the server stores (default: mlflow/server-artifacts)")
    server.add_argument("--no-install", action="store_true", help="fail rather than apt-get install postgresql")
    server.set_defaults(handler=_server)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.server``: the command without the rest of ``cgat-bench``."""
    parser = argparse.ArgumentParser(prog="cgat-bench")
    add_server_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["server", *(argv if argv is not None else sys.argv[1:])])
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
