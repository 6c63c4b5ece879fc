"""Opening the database, and the one transaction helper."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

import memory_db
from memory_db import DEFAULT_URL, AgentMemory, open_engine, transaction
from memory_db.engine import resolve_url


def _pragma(engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_opens_with_wal_busy_timeout_normal_sync_and_foreign_keys(tmp_path) -> None:
    """Every SQLite connection gets WAL, a 30 s busy timeout, synchronous=NORMAL, FKs on."""
    engine = open_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        assert _pragma(engine, "journal_mode") == "wal"
        assert _pragma(engine, "busy_timeout") == 30_000
        assert _pragma(engine, "synchronous") == 1  # NORMAL
        assert _pragma(engine, "foreign_keys") == 1
    finally:
        engine.dispose()


def test_sqlite_file_parent_directories_are_created(tmp_path) -> None:
    """A SQLite URL pointing into missing directories creates them."""
    engine = open_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'm.db'}")
    with engine.connect():
        pass
    engine.dispose()
    assert (tmp_path / "a" / "b" / "m.db").is_file()


def test_default_url_is_relative_to_the_working_directory(tmp_path, monkeypatch) -> None:
    """With no URL the memory lives in .coordinator/memory.db under the current directory."""
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_URL == "sqlite:///.coordinator/memory.db"
    AgentMemory().close()
    assert (tmp_path / ".coordinator" / "memory.db").is_file()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgresql_urls_use_psycopg(scheme: str) -> None:
    """postgresql:// (and postgres://) select the psycopg 3 driver."""
    url = resolve_url(f"{scheme}://user@db.example:5432/memory")
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.database) == ("db.example", "memory")


def test_explicit_drivers_are_kept() -> None:
    """A URL naming its driver is used as given."""
    assert resolve_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"
    assert resolve_url("sqlite+pysqlite:///x.db").drivername == "sqlite+pysqlite"


def test_text_that_is_not_a_url_is_a_value_error() -> None:
    """A malformed URL is refused with ValueError naming it."""
    with pytest.raises(ValueError, match="not a database URL"):
        open_engine("definitely not a url")


def test_write_transactions_take_the_sqlite_write_lock_at_begin(tmp_path) -> None:
    """A write transaction holds SQLite's write lock from BEGIN, before its first write."""
    path = tmp_path / "m.db"
    engine = open_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with transaction(engine) as session:
            session.execute(text("SELECT 1"))
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_read_only_transactions_do_not_block_writers(tmp_path) -> None:
    """A read-only transaction takes no write lock."""
    path = tmp_path / "m.db"
    engine = open_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with transaction(engine, read_only=True) as session:
            session.execute(text("SELECT 1"))
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()


def test_transaction_commits_on_success_and_rolls_back_on_error(db_url: str) -> None:
    """transaction() commits when the block ends cleanly and rolls back when it raises."""
    engine = open_engine(db_url)
    try:
        with transaction(engine) as session:
            session.execute(text("CREATE TABLE scratch (x INTEGER)"))
            session.execute(text("INSERT INTO scratch VALUES (1)"))
        with pytest.raises(RuntimeError), transaction(engine) as session:
            session.execute(text("INSERT INTO scratch VALUES (2)"))
            raise RuntimeError("boom")
        with transaction(engine, read_only=True) as session:
            assert session.execute(text("SELECT x FROM scratch")).scalars().all() == [1]
    finally:
        engine.dispose()


def test_public_names_are_exactly_the_curated_surface() -> None:
    """memory_db exports exactly its public API, and every name resolves."""
    assert sorted(memory_db.__all__) == sorted(
        [
            "DEFAULT_URL",
            "NAMED_QUERIES",
            "SCHEMA_VERSION",
            "AgentMemory",
            "AttemptOutcome",
            "AttemptRecord",
            "ConfigSnapshotRecord",
            "DeadEndRecord",
            "InvalidQuery",
            "MemoryDBError",
            "MigrationFailed",
            "ModificationOutcome",
            "ModificationRecord",
            "NamedQuery",
            "QueryFilter",
            "QueryResult",
            "QueryTimedOut",
            "ReadOnlyViolation",
            "SchemaTooNew",
            "TaskRecord",
            "TelemetryRecord",
            "UnknownRecord",
            "ensure_schema",
            "open_engine",
            "read_schema_version",
            "redact_secrets",
            "run_named_query",
            "run_readonly_sql",
            "transaction",
        ]
    )
    for name in memory_db.__all__:
        assert getattr(memory_db, name) is not None


def test_errors_form_one_tree_with_fitting_builtins() -> None:
    """Every memory_db error is a MemoryDBError, and also the built-in it resembles."""
    assert issubclass(memory_db.SchemaTooNew, memory_db.MemoryDBError)
    assert issubclass(memory_db.ReadOnlyViolation, memory_db.MemoryDBError)
    assert issubclass(memory_db.ReadOnlyViolation, PermissionError)
    assert issubclass(memory_db.UnknownRecord, LookupError)
    assert issubclass(memory_db.InvalidQuery, ValueError)
    assert issubclass(memory_db.MigrationFailed, memory_db.MemoryDBError)
    assert issubclass(memory_db.MigrationFailed, RuntimeError)
    too_new = memory_db.SchemaTooNew(found=3, supported=1)
    assert (too_new.found, too_new.supported) == (3, 1)
    assert "3" in str(too_new) and "1" in str(too_new)
    refused = memory_db.ReadOnlyViolation("DELETE FROM tasks", "writes are not allowed")
    assert "DELETE FROM tasks" in str(refused)


def test_memory_db_imports_nothing_else_of_ours() -> None:
    """memory_db is a leaf: none of its modules import coordinator/orchestrator/etc."""
    import ast
    from pathlib import Path

    package = Path(memory_db.__file__).parent
    ours = {"coordinator", "orchestrator", "intelligence", "self_tune"}
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & ours, f"{module.name} imports {roots & ours}"


def test_switching_to_wal_waits_for_a_lock_another_connection_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite refuses the switch to WAL at once ("database is locked", no busy handler) while
    another connection holds a lock on the file: processes opening a fresh database together
    failed now and then. The switch waits for the lock instead."""
    import threading

    from memory_db import engine as engine_module

    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # a write lock, as a sibling creating the schema holds
    holder.execute("INSERT INTO t VALUES (1)")
    retried = threading.Event()
    real_sleep = engine_module.time.sleep

    def sleep(seconds: float) -> None:
        retried.set()  # the switch was refused once and is waiting
        real_sleep(seconds)

    monkeypatch.setattr(engine_module.time, "sleep", sleep)
    opener = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            engine_module._enable_wal(opener.cursor())
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=switch)
    thread.start()
    assert retried.wait(10)
    holder.execute("COMMIT")
    thread.join(10)
    assert not errors
    assert opener.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.close()
    opener.close()
