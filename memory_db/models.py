"""The memory's tables, as typed SQLAlchemy models.

Timestamps are epoch seconds (UTC) stored as double-precision floats: the same value the
injected clock returns, portable across SQLite and PostgreSQL, and subtractable for
durations. Outcomes are stored as their enum values in plain VARCHAR columns.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import JSON, Double, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from memory_db.outcome import AttemptOutcome

__all__ = [
    "AttemptOutcome",
    "AttemptRow",
    "Base",
    "ConfigSnapshotRow",
    "DeadEndRow",
    "LearnerStateRow",
    "ModificationOutcome",
    "ModificationRow",
    "SchemaVersionRow",
    "TaskRow",
]


class ModificationOutcome(StrEnum):
    """Where a self-modification stands; the values are the gate's vocabulary."""

    DEPLOYED = "Deployed"
    ROLLED_BACK = "RolledBack"
    VALIDATION_FAILED = "ValidationFailed"
    REJECTED = "Rejected"
    IN_PROGRESS = "InProgress"


def _enum_column_type(enum_cls: type[StrEnum]) -> Enum:
    return Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    """Declarative base; `Base.metadata` is the current (SCHEMA_VERSION) shape."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        float: Double(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class SchemaVersionRow(Base):
    """One row: the schema version this database was last migrated to."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    stamped_at: Mapped[float]


class TaskRow(Base):
    """A task the fleet has seen; upserted whenever it is claimed."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), index=True)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[float]
    updated_at: Mapped[float]


class AttemptRow(Base):
    """One agent's attempt at a task; the ending columns are null while it runs."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(255), ForeignKey("tasks.id"), index=True)
    attempt: Mapped[int]
    agent: Mapped[str] = mapped_column(String(255), index=True)
    started_at: Mapped[float]
    ended_at: Mapped[float | None]
    exit_code: Mapped[int | None]
    outcome: Mapped[AttemptOutcome | None] = mapped_column(_enum_column_type(AttemptOutcome))
    duration_s: Mapped[float | None]
    log_path: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # added by migration 1
    # Lease renewals (added by migration 5): how many, the latest, and the expiry it set.
    heartbeats: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_heartbeat_at: Mapped[float | None]
    lease_expires_at: Mapped[float | None]


class ModificationRow(Base):
    """A change the fleet made to this system, and where it stands."""

    __tablename__ = "modifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(255), ForeignKey("tasks.id"), index=True)
    files_changed: Mapped[list[str]]
    outcome: Mapped[ModificationOutcome] = mapped_column(
        _enum_column_type(ModificationOutcome), index=True
    )
    metric_deltas: Mapped[dict[str, Any]]
    created_at: Mapped[float]
    updated_at: Mapped[float]
    # added by migration 2: where a gated change lives and what the gate said about it
    branch: Mapped[str | None] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    verdicts: Mapped[list[Any] | None] = mapped_column(JSON)


class DeadEndRow(Base):
    """An approach that failed and should not be tried again."""

    __tablename__ = "dead_ends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    module: Mapped[str] = mapped_column(String(255), index=True)
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float]


class ConfigSnapshotRow(Base):
    """A labelled copy of live configuration values."""

    __tablename__ = "config_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(255))
    # Column renamed because VALUES is an SQL keyword, which would trip up raw queries.
    values: Mapped[dict[str, Any]] = mapped_column("config_values")
    created_at: Mapped[float]


class TelemetryRow(Base):
    """One telemetry snapshot kept for later questions (`memory query telemetry`), stored
    at a coarser cadence than it is sampled, newest rows kept."""

    __tablename__ = "telemetry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    taken_at: Mapped[float] = mapped_column(index=True)
    sources: Mapped[str] = mapped_column(String(255))
    # Named for what it holds: VALUES is an SQL keyword.
    values: Mapped[dict[str, Any]] = mapped_column("metric_values")


class LearnerStateRow(Base):
    """The learned state of one online learner (a bandit router, …), kept across restarts.

    `state` is the learner's own JSON document; the learner versions its format inside it,
    so this table never changes shape when a learner does.
    """

    __tablename__ = "learner_states"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[dict[str, Any]]
    updated_at: Mapped[float]
