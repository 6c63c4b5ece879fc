"""Schema versioning: create a fresh database, migrate an older one, refuse a newer one.

Version history (each migration takes the database from version N-1 to N):

    0  the shape before versioning: today's tables, minus `attempts.reason`,
       and no `schema_version` table
    1  `attempts.reason` added; `schema_version` stamped
    2  `modifications.branch`, `.commit_sha`, `.verdicts` added (the validation gate's record)
    3  `learner_states` added (learned router state restored on start)
    4  `telemetry` added (snapshots of the self-improvement loop's telemetry)
    5  `attempts.heartbeats`, `.last_heartbeat_at`, `.lease_expires_at` added (lease renewals)

A fresh database gets `Base.metadata` (always the current shape) and is stamped with
`SCHEMA_VERSION` directly. Migrations run inside one write transaction that first takes
the database's write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so
processes opening the same database at once take turns and the losers find it done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from sqlalchemy import Connection, Engine, delete, func, inspect, select, text

from memory_db.engine import transaction
from memory_db.errors import MigrationFailed, SchemaTooNew
from memory_db.models import Base, LearnerStateRow, SchemaVersionRow, TelemetryRow

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "ensure_schema", "read_schema_version"]

SCHEMA_VERSION = 5
"""The schema version this code reads and writes."""

Migration = Callable[[Connection], None]

# Any constant shared by every process that migrates this database ("memdb").
_PG_MIGRATION_LOCK_KEY = 0x6D656D6462


def _v1_add_attempt_reason(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE attempts ADD COLUMN reason TEXT"))


def _v2_add_modification_gate_fields(conn: Connection) -> None:
    for column, kind in (("branch", "VARCHAR(255)"), ("commit_sha", "VARCHAR(64)"),
                         ("verdicts", "JSON")):
        conn.execute(text(f"ALTER TABLE modifications ADD COLUMN {column} {kind}"))


def _v3_add_learner_states(conn: Connection) -> None:
    # A new table only; safe to build from the model as long as the model keeps this shape
    # (a later change to it needs a migration of its own).
    LearnerStateRow.__table__.create(conn, checkfirst=True)


def _v4_add_telemetry(conn: Connection) -> None:
    TelemetryRow.__table__.create(conn, checkfirst=True)  # a new table only, as in v3


def _v5_add_attempt_heartbeats(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE attempts ADD COLUMN heartbeats INTEGER NOT NULL DEFAULT 0"))
    for column in ("last_heartbeat_at", "lease_expires_at"):
        conn.execute(text(f"ALTER TABLE attempts ADD COLUMN {column} DOUBLE PRECISION"))


MIGRATIONS: Mapping[int, Migration] = MappingProxyType(
    {
        1: _v1_add_attempt_reason,
        2: _v2_add_modification_gate_fields,
        3: _v3_add_learner_states,
        4: _v4_add_telemetry,
        5: _v5_add_attempt_heartbeats,
    }
)
"""Migration N takes a database from version N-1 to N; keys are exactly 1..SCHEMA_VERSION."""


def ensure_schema(engine: Engine, *, clock: Callable[[], float]) -> int:
    """Bring the database to `SCHEMA_VERSION` and return it.

    Raises `SchemaTooNew` (leaving the database untouched) when it was written by newer code,
    and `MigrationFailed` (after rolling the whole upgrade back) when a migration fails.
    """
    with transaction(engine) as session:
        conn = session.connection()
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        found = _current_version(conn)
        if found is None:
            Base.metadata.create_all(conn)
            _stamp(conn, SCHEMA_VERSION, clock())
            return SCHEMA_VERSION
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found, SCHEMA_VERSION)
        if found < SCHEMA_VERSION:
            SchemaVersionRow.__table__.create(conn, checkfirst=True)
            for version in range(found + 1, SCHEMA_VERSION + 1):
                try:
                    MIGRATIONS[version](conn)
                except Exception as exc:
                    # The transaction rolls back: DDL is transactional on SQLite and PostgreSQL.
                    raise MigrationFailed(version, found, exc) from exc
            _stamp(conn, SCHEMA_VERSION, clock())
        return SCHEMA_VERSION


def read_schema_version(engine: Engine) -> int | None:
    """The database's schema version without changing anything; None for an empty database."""
    with transaction(engine, read_only=True) as session:
        return _current_version(session.connection())


def _current_version(conn: Connection) -> int | None:
    inspector = inspect(conn)
    if not inspector.has_table(SchemaVersionRow.__tablename__):
        # Tables but no stamp: the pre-versioning shape (version 0). Nothing: a fresh database.
        return 0 if inspector.has_table("tasks") else None
    stamped = conn.execute(select(func.max(SchemaVersionRow.version))).scalar_one()
    return 0 if stamped is None else int(stamped)


def _stamp(conn: Connection, version: int, now: float) -> None:
    conn.execute(delete(SchemaVersionRow))
    conn.execute(SchemaVersionRow.__table__.insert().values(version=version, stamped_at=now))
