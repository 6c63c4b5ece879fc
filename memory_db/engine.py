"""Opening the memory database, and the one transaction helper.

SQLite (the default) opens in WAL mode with a busy timeout, `synchronous=NORMAL` and
foreign keys on. Any other SQLAlchemy URL works too; `postgresql://` is mapped to the
psycopg 3 driver. Every read and write goes through `transaction()`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from memory_db.errors import ReadOnlyViolation

__all__ = [
    "DEFAULT_URL",
    "SQLITE_BUSY_TIMEOUT_S",
    "open_engine",
    "resolve_url",
    "transaction",
]

DEFAULT_URL = "sqlite:///.coordinator/memory.db"
"""Where the memory lives unless told otherwise; relative to the current directory."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write lock before giving up."""

# Execution option read by the SQLite "begin" hook: True → BEGIN IMMEDIATE.
_WRITE_OPTION = "memory_db_write"

# PostgreSQL SQLSTATE read_only_sql_transaction.
_PG_READ_ONLY_SQLSTATE = "25006"

_POSTGRES_DRIVERNAMES = frozenset({"postgres", "postgresql"})


def resolve_url(url: str | URL | None = None) -> URL:
    """Parse `url` (default `DEFAULT_URL`); bare `postgresql://` selects the psycopg 3 driver.

    Raises `ValueError` for text that is not a database URL.
    """
    raw = DEFAULT_URL if url is None else url
    try:
        parsed = make_url(raw)
    except Exception as exc:  # sqlalchemy raises ArgumentError; callers want ValueError
        raise ValueError(f"url is not a database URL: {raw!r} ({exc})") from exc
    if parsed.drivername in _POSTGRES_DRIVERNAMES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def open_engine(url: str | URL | None = None) -> Engine:
    """Create an engine for `url` (default `DEFAULT_URL`).

    For a SQLite file the parent directory is created. Opening does not connect and does
    not create the schema (`AgentMemory` does that).
    """
    parsed = resolve_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    _create_sqlite_parent(parsed)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


@contextmanager
def transaction(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """Yield a `Session` inside one database transaction; commit on success, roll back on error.

    A write transaction on SQLite starts with `BEGIN IMMEDIATE`, so concurrent writers from
    many processes queue on the busy timeout instead of failing on a read→write lock upgrade.

    With `read_only=True` nothing is ever committed, and the database itself refuses writes:
    SQLite runs with `PRAGMA query_only=ON` (reset afterwards), PostgreSQL with
    `SET TRANSACTION READ ONLY`. A write refused that way raises `ReadOnlyViolation`.
    Other backends rely on the caller's statement check alone.
    """
    backend = engine.dialect.name
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE_OPTION: not read_only})
        if read_only and backend == "sqlite":
            _set_sqlite_query_only(conn, on=True)
        try:
            with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                try:
                    if read_only and backend == "postgresql":
                        session.execute(text("SET TRANSACTION READ ONLY"))
                    yield session
                    if read_only:
                        session.rollback()
                    else:
                        session.commit()
                except DBAPIError as exc:
                    session.rollback()
                    if read_only and _is_read_only_refusal(exc):
                        raise ReadOnlyViolation(
                            str(exc.statement or ""), "the database refused a write"
                        ) from exc
                    raise
                except BaseException:
                    session.rollback()
                    raise
        finally:
            if read_only and backend == "sqlite":
                _set_sqlite_query_only(conn, on=False)


def _create_sqlite_parent(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy's documented recipe: stop pysqlite from issuing its own BEGIN, so the
    # "begin" hook below decides (and DDL runs inside our transactions).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch the database to WAL (a no-op once it is: the mode is kept in the file).

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once
    instead of calling the busy handler when another connection holds a lock on the file at
    that moment: processes opening a fresh database together failed (3 of 150 under load).
    So retry, for as long as the busy timeout would have waited."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)  # another connection holds the lock for a few milliseconds


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, True)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _set_sqlite_query_only(conn: Connection, *, on: bool) -> None:
    # Straight on the DBAPI connection: going through `conn` would autobegin a transaction.
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is not None:
        dbapi_connection.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def _is_read_only_refusal(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _PG_READ_ONLY_SQLSTATE:
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
        return True
    return "readonly database" in str(orig)
