"""Exclusive claims on runs between workers: a row in a database table, or a file lock.

Why a table: ``fcntl`` locks in ``runs/locks`` only hold between processes that see the same local
file system; on network file systems they are unreliable, and workers on other machines do not see
them at all. Workers that share a tracking database can instead claim a run with a row in
``cgat_claims(key, owner, heartbeat)`` beside MLflow's tables:

* claiming is one ``INSERT``; a conflict on the key means someone else holds it,
* unless the holder's heartbeat is older than ``timeout_s``: a dead holder (SIGKILL, lost machine)
  cannot delete its row, so a conditional ``UPDATE ... WHERE heartbeat < now - timeout`` takes it
  over; only one of several contenders can match that condition,
* while held, a background thread refreshes the heartbeat every ``heartbeat_s``,
* releasing deletes the row (only if this holder still owns it).

Heartbeats are stamped with the database server's clock, so machines with skewed clocks agree on
what is stale. ``to_timestamp(heartbeat)`` shows them as times in PostgreSQL.

File locks stay the default for SQLite stores (one machine, one folder): see ``claims_for``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from benchmarks.server import DB_URL_ENV
from cgat_dgl.training.tracking import redact_uri, with_driver

log = logging.getLogger(__name__)

CLAIMS_DB_ENV = "CGAT_CLAIMS_DB"  # a database URL for the claims, or "file" for file locks
TABLE = "cgat_claims"
_ADVISORY_LOCK = 0x0C6A7C1A  # serializes CREATE TABLE between workers starting at once (PostgreSQL)


class Claims(Protocol):
    def claim(self, key: str, wait: bool = False) -> AbstractContextManager[bool]:
        """Yield True while ``key`` is held by this caller, False if another holds it (``wait``: block)."""
        ...


class FileClaims:
    """``fcntl`` locks in a folder: released by the kernel when the holder exits or dies."""

    def __init__(self, lock_dir: Path) -> None:
        self.lock_dir = Path(lock_dir)
        self.lock_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def claim(self, key: str, wait: bool = False) -> Iterator[bool]:
        path = self.lock_dir / f"{key}.lock"
        with open(path, "a+") as handle:
            flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(handle, flags)
            except BlockingIOError:
                yield False
                return
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),  # host:pid:token of the holding claim
        sa.Column("heartbeat", sa.Float(precision=53), nullable=False),  # seconds since 1970, database clock
    )


class DatabaseClaims:
    """Claims as rows of ``cgat_claims`` in the database at ``url`` (created if absent)."""

    def __init__(self, url: str, heartbeat_s: float = 5.0, timeout_s: float = 60.0, poll_s: float = 1.0) -> None:
        if timeout_s <= 2 * heartbeat_s:
            raise ValueError(f"claim timeout ({timeout_s} s) must exceed two heartbeats ({heartbeat_s} s each)")
        self.url = with_driver(url)
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.table = _table(sa.MetaData())
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DatabaseClaims({redact_uri(self.url)!r})"

    # --- the database --------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """Created on first use (a Store built in a parent process never connects needlessly)."""
        with self._lock:
            if self._engine is None:
                kwargs: dict[str, object] = {"pool_pre_ping": True}
                if self.url.startswith("sqlite"):
                    kwargs["connect_args"] = {"timeout": 60}
                else:
                    kwargs.update(pool_size=2, max_overflow=4)
                engine = sa.create_engine(self.url, **kwargs)
                self._create_table(engine)
                self._engine = engine
            return self._engine

    def _create_table(self, engine: Engine) -> None:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK})
            self.table.create(connection, checkfirst=True)

    def _now(self, dialect: str) -> sa.ColumnElement[float]:
        """The database server's clock in seconds since 1970 (the client's if the dialect is unknown)."""
        if dialect == "postgresql":
            return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float(precision=53))
        if dialect == "sqlite":
            return (sa.func.julianday("now") - 2440587.5) * 86400.0
        return sa.literal(time.time(), sa.Float(precision=53))

    def _insert(self, dialect: str, values: Mapping[str, object]) -> sa.Executable:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(self.table).values(**values).on_conflict_do_nothing(index_elements=["key"])
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(self.table).values(**values).on_conflict_do_nothing(index_elements=["key"])
        return sa.insert(self.table).values(**values)

    # --- one claim -----------------------------------------------------------------------------
    def try_acquire(self, key: str, owner: str) -> bool:
        """Take ``key`` for ``owner``: a new row, or a row whose holder stopped beating."""
        engine = self.engine
        dialect = engine.dialect.name
        now = self._now(dialect)
        try:
            with engine.begin() as connection:
                inserted = connection.execute(self._insert(dialect, {"key": key, "owner": owner, "heartbeat": now}))
            if inserted.rowcount == 1:
                return True
        except sa.exc.IntegrityError:  # dialects without ON CONFLICT DO NOTHING
            pass
        c = self.table.c
        stale = sa.update(self.table).where(c.key == key, c.heartbeat < now - self.timeout_s)
        with engine.begin() as connection:
            taken = connection.execute(stale.values(owner=owner, heartbeat=now)).rowcount == 1
        if taken:
            log.warning("claim %s: took it over from a holder silent for over %.0f s", key, self.timeout_s)
        return taken

    def beat(self, key: str, owner: str) -> bool:
        """Refresh the heartbeat; False when the row is no longer this owner's (taken over or gone)."""
        c = self.table.c
        statement = sa.update(self.table).where(c.key == key, c.owner == owner)
        with self.engine.begin() as connection:
            return connection.execute(statement.values(heartbeat=self._now(self.engine.dialect.name))).rowcount == 1

    def release(self, key: str, owner: str) -> None:
        c = self.table.c
        with self.engine.begin() as connection:
            connection.execute(sa.delete(self.table).where(c.key == key, c.owner == owner))

    def holder(self, key: str) -> str | None:
        """The owner of ``key``'s row, or None (for diagnostics and tests)."""
        with self.engine.connect() as connection:
            return connection.execute(sa.select(self.table.c.owner).where(self.table.c.key == key)).scalar()

    @contextmanager
    def claim(self, key: str, wait: bool = False) -> Iterator[bool]:
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        while not self.try_acquire(key, owner):
            if not wait:
                yield False
                return
            time.sleep(self.poll_s)
        stop = threading.Event()
        beating = threading.Thread(target=self._beat_until, args=(key, owner, stop), name=f"claim-{key}", daemon=True)
        beating.start()
        try:
            yield True
        finally:
            stop.set()
            beating.join()
            self.release(key, owner)

    def _beat_until(self, key: str, owner: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                if not self.beat(key, owner):
                    log.warning("claim %s: lost (its heartbeat was late and another worker took it over)", key)
                    return
            except sa.exc.SQLAlchemyError as error:  # a database hiccup: try again at the next beat
                log.warning("claim %s: heartbeat failed: %s", key, redact_uri(str(error)))


def claims_database(tracking_uri: str, claims_db: str | None = None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The database URL the claims go to, or None for file locks.

    In order: ``claims_db``, else ``$CGAT_CLAIMS_DB`` ("file" forces file locks); a tracking URI that
    is itself a database other than SQLite (``postgresql://``, ``mysql://``...); for an http(s)
    tracking server, ``$CGAT_DB_URL`` (the database behind it). SQLite stores keep file locks unless
    a claims database is named (``CGAT_CLAIMS_DB=sqlite:///...`` works too).
    """
    named = claims_db or environ.get(CLAIMS_DB_ENV)
    if named:
        return None if named == "file" else named
    scheme = tracking_uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return environ.get(DB_URL_ENV) or None
    if "://" in tracking_uri and scheme not in ("sqlite", "file", "databricks") and not scheme.startswith("sqlite+"):
        return tracking_uri
    return None


def claims_for(
    tracking_uri: str, lock_dir: Path, claims_db: str | None = None, environ: Mapping[str, str] = os.environ
) -> Claims:
    """Database claims where ``claims_database`` names a database, else file locks in ``lock_dir``."""
    url = claims_database(tracking_uri, claims_db, environ)
    if url is not None:
        return DatabaseClaims(url)
    if tracking_uri.split(":", 1)[0].lower() in ("http", "https"):
        log.warning(
            "tracking server %s without a claims database: runs are claimed with file locks in %s, which only "
            "hold between workers on this machine; set %s to the server's database URL",
            redact_uri(tracking_uri), lock_dir, CLAIMS_DB_ENV,
        )
    return FileClaims(lock_dir)
