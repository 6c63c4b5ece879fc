"""The agent memory's error tree.

    MemoryDBError
    ├── SchemaTooNew        the database was written by a newer prompt-orchestrator
    ├── MigrationFailed     (also RuntimeError) a schema migration failed; nothing was changed
    ├── ReadOnlyViolation   (also PermissionError) a read-only path was asked to write
    ├── UnknownRecord       (also LookupError) no task / attempt / modification with that id
    └── InvalidQuery        (also ValueError) an unknown named query, a bad filter, or SQL
        │                   the database could not run
        └── QueryTimedOut   a read-only query ran past its statement timeout and was stopped
"""

from __future__ import annotations

__all__ = [
    "InvalidQuery",
    "MemoryDBError",
    "MigrationFailed",
    "QueryTimedOut",
    "ReadOnlyViolation",
    "SchemaTooNew",
    "UnknownRecord",
]


class MemoryDBError(Exception):
    """Root of every error the agent memory raises on purpose."""


class SchemaTooNew(MemoryDBError):
    """The database's schema version is newer than this code understands; nothing was touched."""

    def __init__(self, found: int, supported: int) -> None:
        self.found, self.supported = found, supported
        super().__init__(
            f"memory database schema version {found} is newer than the supported "
            f"version {supported}; upgrade prompt-orchestrator to open it "
            "(the database was left unchanged)"
        )


class MigrationFailed(MemoryDBError, RuntimeError):
    """Migration `version` raised; the whole upgrade was rolled back, the database is as it was."""

    def __init__(self, version: int, found: int, cause: BaseException) -> None:
        self.version, self.found = version, found
        super().__init__(
            f"memory database migration {version} failed ({type(cause).__name__}: {cause}); "
            f"the database was left at schema version {found}"
        )


class ReadOnlyViolation(MemoryDBError, PermissionError):
    """A statement that would write (or is not one plain read) reached a read-only path."""

    def __init__(self, statement: str, why: str) -> None:
        self.statement, self.why = statement, why
        shown = " ".join(statement.split())
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"read-only memory query refused ({why}): {shown!r}")


class UnknownRecord(MemoryDBError, LookupError):
    """No record of `kind` (task, attempt, modification) has id `record_id`."""

    def __init__(self, kind: str, record_id: object) -> None:
        self.kind, self.record_id = kind, record_id
        super().__init__(f"unknown {kind}: {record_id!r}")


class InvalidQuery(MemoryDBError, ValueError):
    """A query could not run: unknown name, bad filter value, or an error from the database."""

    def __init__(self, message: str, *, query: str | None = None) -> None:
        self.query = query
        super().__init__(message)


class QueryTimedOut(InvalidQuery):
    """A read-only query ran longer than `timeout_s` and the database stopped it."""

    def __init__(self, timeout_s: float, *, query: str | None = None) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"query stopped after its {timeout_s:g}s statement timeout "
                         "(narrow it, or give a longer --timeout-s)", query=query)
