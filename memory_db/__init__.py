"""Agent memory: what the fleet did, what it changed, and what not to try again.

SQLite (WAL) by default, any SQLAlchemy URL (PostgreSQL) for a shared fleet. Write through
`AgentMemory`; read through `run_readonly_sql` and `run_named_query`.
"""

from memory_db.engine import DEFAULT_URL, open_engine, transaction
from memory_db.errors import (
    InvalidQuery,
    MemoryDBError,
    MigrationFailed,
    ReadOnlyViolation,
    SchemaTooNew,
    UnknownRecord,
)
from memory_db.memory import AgentMemory
from memory_db.models import AttemptOutcome, ModificationOutcome
from memory_db.queries import (
    NAMED_QUERIES,
    NamedQuery,
    QueryFilter,
    QueryResult,
    run_named_query,
    run_readonly_sql,
)
from memory_db.records import (
    AttemptRecord,
    ConfigSnapshotRecord,
    DeadEndRecord,
    ModificationRecord,
    TaskRecord,
)
from memory_db.redact import redact_secrets
from memory_db.schema import SCHEMA_VERSION, ensure_schema, read_schema_version

__all__ = [
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
    "ReadOnlyViolation",
    "SchemaTooNew",
    "TaskRecord",
    "UnknownRecord",
    "ensure_schema",
    "open_engine",
    "read_schema_version",
    "redact_secrets",
    "run_named_query",
    "run_readonly_sql",
    "transaction",
]
