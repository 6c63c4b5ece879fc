"""Schema versioning: fresh databases are stamped, older ones migrated, newer ones refused."""

from __future__ import annotations

import multiprocessing

import pytest
from fakeclock import FakeClock
from memdb_helpers import open_fresh_memory
from sqlalchemy import (
    JSON,
    Column,
    Double,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    text,
)

from memory_db import (
    SCHEMA_VERSION,
    AgentMemory,
    AttemptOutcome,
    MigrationFailed,
    SchemaTooNew,
    open_engine,
    read_schema_version,
    schema,
)
from memory_db.schema import MIGRATIONS


def _version_0_metadata() -> MetaData:
    """The pre-versioning shape, written out by hand: no schema_version, no attempts.reason."""
    meta = MetaData()
    Table(
        "tasks",
        meta,
        Column("id", String(255), primary_key=True),
        Column("title", Text, nullable=False),
        Column("prompt", Text, nullable=False),
        Column("priority", String(32), nullable=False),
        Column("state", String(32), nullable=False),
        Column("created_by", String(255)),
        Column("created_at", Double, nullable=False),
        Column("updated_at", Double, nullable=False),
    )
    Table(
        "attempts",
        meta,
        Column("id", Integer, primary_key=True),
        Column("task_id", String(255), ForeignKey("tasks.id"), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("agent", String(255), nullable=False),
        Column("started_at", Double, nullable=False),
        Column("ended_at", Double),
        Column("exit_code", Integer),
        Column("outcome", String(32)),
        Column("duration_s", Double),
        Column("log_path", Text),
    )
    Table(
        "modifications",
        meta,
        Column("id", Integer, primary_key=True),
        Column("description", Text, nullable=False),
        Column("task_id", String(255), ForeignKey("tasks.id")),
        Column("files_changed", JSON, nullable=False),
        Column("outcome", String(32), nullable=False),
        Column("metric_deltas", JSON, nullable=False),
        Column("created_at", Double, nullable=False),
        Column("updated_at", Double, nullable=False),
    )
    Table(
        "dead_ends",
        meta,
        Column("id", Integer, primary_key=True),
        Column("description", Text, nullable=False),
        Column("module", String(255), nullable=False),
        Column("reason", Text, nullable=False),
        Column("evidence", Text, nullable=False),
        Column("created_at", Double, nullable=False),
    )
    Table(
        "config_snapshots",
        meta,
        Column("id", Integer, primary_key=True),
        Column("label", String(255), nullable=False),
        Column("config_values", JSON, nullable=False),
        Column("created_at", Double, nullable=False),
    )
    return meta


def _make_version_0_database(url: str) -> None:
    engine = open_engine(url)
    meta = _version_0_metadata()
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(
            meta.tables["tasks"].insert(),
            [
                {
                    "id": "old-task",
                    "title": "from before versioning",
                    "prompt": "p",
                    "priority": "high",
                    "state": "done",
                    "created_by": None,
                    "created_at": 10.0,
                    "updated_at": 20.0,
                }
            ],
        )
        conn.execute(
            meta.tables["attempts"].insert(),
            [
                {
                    "task_id": "old-task",
                    "attempt": 1,
                    "agent": "a1",
                    "started_at": 10.0,
                    "ended_at": 15.0,
                    "exit_code": 0,
                    "outcome": "succeeded",
                    "duration_s": 5.0,
                    "log_path": "old.log",
                }
            ],
        )
    engine.dispose()


def _version(url: str) -> int | None:
    engine = open_engine(url)
    try:
        return read_schema_version(engine)
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> list[str]:
    engine = open_engine(url)
    try:
        return [column["name"] for column in inspect(engine).get_columns(table)]
    finally:
        engine.dispose()


def test_migrations_cover_every_version_in_order() -> None:
    """There is exactly one migration for each version from 1 to SCHEMA_VERSION."""
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


def test_fresh_database_is_created_and_stamped(db_url: str, clock: FakeClock) -> None:
    """Opening an empty database creates the schema and stamps the current version."""
    with AgentMemory(db_url, clock=clock) as memory:
        assert read_schema_version(memory.engine) == SCHEMA_VERSION
        with memory.engine.connect() as conn:
            rows = conn.execute(text("SELECT version, stamped_at FROM schema_version")).all()
    assert [tuple(row) for row in rows] == [(SCHEMA_VERSION, clock.now)]


def test_reopening_a_current_database_changes_nothing(db_url: str, clock: FakeClock) -> None:
    """Opening a database already at the current version keeps its data and stamp."""
    with AgentMemory(db_url, clock=clock) as memory:
        memory.record_task("t", title="", prompt="", priority="low", state="done", created_by=None)
    clock.advance(100)
    with AgentMemory(db_url, clock=clock) as memory:
        assert memory.task("t").state == "done"
        with memory.engine.connect() as conn:
            stamped = conn.execute(text("SELECT stamped_at FROM schema_version")).scalar_one()
    assert stamped == clock.now - 100


def test_version_0_database_is_migrated_keeping_its_data(db_url: str, clock: FakeClock) -> None:
    """An older database is upgraded in place: the new column appears, old rows survive."""
    _make_version_0_database(db_url)
    assert _version(db_url) == 0
    assert "reason" not in _columns(db_url, "attempts")

    with AgentMemory(db_url, clock=clock) as memory:
        assert read_schema_version(memory.engine) == SCHEMA_VERSION
        assert memory.task("old-task").title == "from before versioning"
        (old,) = memory.attempts("old-task")
        assert (old.outcome, old.duration_s, old.reason) == (AttemptOutcome.SUCCEEDED, 5.0, None)
        new_id = memory.start_attempt("old-task", attempt=2, agent="a2", log_path=None)
        memory.finish_attempt(new_id, outcome="failed", exit_code=1, reason="now recorded")
        assert memory.attempt(new_id).reason == "now recorded"
        memory.save_learner_state("router", {"version": 1})
        assert memory.load_learner_state("router") == {"version": 1}
    assert "reason" in _columns(db_url, "attempts")


def test_migrations_run_in_order_from_the_version_found(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every migration above the found version runs once, in order, then the new stamp."""
    ran: list[int] = []

    def later(version: int):
        return lambda conn: ran.append(version)

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: MIGRATIONS[1], 2: later(2), 3: later(3)})
    _make_version_0_database(db_url)
    AgentMemory(db_url, clock=clock).close()
    assert ran == [2, 3]
    assert _version(db_url) == 3


def test_a_failing_migration_leaves_the_database_as_it_was(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If any migration fails, the whole upgrade rolls back: old version, old shape."""

    def broken(conn) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(schema, "MIGRATIONS", {1: MIGRATIONS[1], 2: broken})
    _make_version_0_database(db_url)
    with pytest.raises(MigrationFailed, match=r"migration 2 failed.*disk on fire") as caught:
        AgentMemory(db_url, clock=clock)
    assert (caught.value.version, caught.value.found) == (2, 0)
    assert _version(db_url) == 0
    assert "reason" not in _columns(db_url, "attempts")


def test_newer_database_is_refused_and_left_unchanged(db_url: str, clock: FakeClock) -> None:
    """A database stamped by newer code raises SchemaTooNew and is not touched."""
    with AgentMemory(db_url, clock=clock) as memory:
        memory.record_task("t", title="", prompt="", priority="low", state="done", created_by=None)
        with memory.engine.begin() as conn:
            conn.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    columns_before = _columns(db_url, "attempts")

    with pytest.raises(SchemaTooNew) as caught:
        AgentMemory(db_url, clock=clock)

    assert (caught.value.found, caught.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert "upgrade prompt-orchestrator" in str(caught.value)
    assert _version(db_url) == SCHEMA_VERSION + 1
    engine = open_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, state FROM tasks")).all() == [("t", "done")]
    engine.dispose()
    assert _columns(db_url, "attempts") == columns_before


RACERS = 4


def test_many_processes_opening_a_fresh_database_at_once_all_succeed(db_url: str) -> None:
    """Processes racing to create the schema all open it; none fails."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    children = [
        context.Process(target=open_fresh_memory, args=(db_url, barrier)) for _ in range(RACERS)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0] * RACERS
    assert _version(db_url) == SCHEMA_VERSION
