"""Agent memory: what the fleet did, what it changed, and what not to try again.

SQLite (WAL) by default, any SQLAlchemy URL (PostgreSQL) for a shared fleet. Write through
`AgentMemory`; read through `run_readonly_sql` and `run_named_query`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memory_db.engine import DEFAULT_URL, open_engine, transaction
    from memory_db.errors import (
        InvalidQuery,
        MemoryDBError,
        MigrationFailed,
        QueryTimedOut,
        ReadOnlyViolation,
        SchemaTooNew,
        UnknownRecord,
    )
    from memory_db.memory import AgentMemory
    from memory_db.models import ModificationOutcome
    from memory_db.outcome import AttemptOutcome
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
        TelemetryRecord,
    )
    from memory_db.redact import redact_secrets
    from memory_db.schema import SCHEMA_VERSION, ensure_schema, read_schema_version

# Exports load on first access, so `from memory_db.outcome import AttemptOutcome` (the
# coordinator's claim path) does not pay for SQLAlchemy.
_EXPORTS = {
    "AgentMemory": "memory_db.memory",
    "AttemptOutcome": "memory_db.outcome",
    "AttemptRecord": "memory_db.records",
    "ConfigSnapshotRecord": "memory_db.records",
    "TelemetryRecord": "memory_db.records",
    "DEFAULT_URL": "memory_db.engine",
    "DeadEndRecord": "memory_db.records",
    "InvalidQuery": "memory_db.errors",
    "QueryTimedOut": "memory_db.errors",
    "MemoryDBError": "memory_db.errors",
    "MigrationFailed": "memory_db.errors",
    "ModificationOutcome": "memory_db.models",
    "ModificationRecord": "memory_db.records",
    "NAMED_QUERIES": "memory_db.queries",
    "NamedQuery": "memory_db.queries",
    "QueryFilter": "memory_db.queries",
    "QueryResult": "memory_db.queries",
    "ReadOnlyViolation": "memory_db.errors",
    "SCHEMA_VERSION": "memory_db.schema",
    "SchemaTooNew": "memory_db.errors",
    "TaskRecord": "memory_db.records",
    "UnknownRecord": "memory_db.errors",
    "ensure_schema": "memory_db.schema",
    "open_engine": "memory_db.engine",
    "read_schema_version": "memory_db.schema",
    "redact_secrets": "memory_db.redact",
    "run_named_query": "memory_db.queries",
    "run_readonly_sql": "memory_db.queries",
    "transaction": "memory_db.engine",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
