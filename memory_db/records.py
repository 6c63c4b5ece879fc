"""Detached, immutable copies of stored rows, as `AgentMemory` returns them.

Timestamps are epoch seconds (UTC), exactly as the memory's clock returned them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memory_db.models import AttemptOutcome, ModificationOutcome

__all__ = [
    "AttemptRecord",
    "ConfigSnapshotRecord",
    "DeadEndRecord",
    "ModificationRecord",
    "TaskRecord",
    "TelemetryRecord",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """A task as the memory last heard of it."""

    task_id: str
    title: str
    prompt: str
    priority: str
    state: str
    created_by: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One agent's attempt at a task; `outcome` is None while it is still running.

    `heartbeats` counts the lease renewals recorded for it; `lease_expires_at` is the
    wall-clock expiry the latest one set."""

    attempt_id: int
    task_id: str
    attempt: int
    agent: str
    started_at: float
    ended_at: float | None
    exit_code: int | None
    outcome: AttemptOutcome | None
    duration_s: float | None
    log_path: str | None
    reason: str | None
    heartbeats: int = 0
    last_heartbeat_at: float | None = None
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModificationRecord:
    """A change the fleet made to this system; `metric_deltas` are after-minus-before."""

    mod_id: int
    description: str
    task_id: str | None
    files_changed: tuple[str, ...]
    outcome: ModificationOutcome
    metric_deltas: Mapping[str, float]
    created_at: float
    updated_at: float
    branch: str | None = None
    commit: str | None = None
    verdicts: tuple[Mapping[str, Any], ...] = ()
    """The gate's verdict per command (name, command, passed, exit_code, duration_s, reason)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadEndRecord:
    """An approach that was tried and should not be tried again, and why."""

    dead_end_id: int
    description: str
    module: str
    reason: str
    evidence: str
    created_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryRecord:
    """One stored telemetry snapshot: when, from which sources, every metric's value."""

    telemetry_id: int
    taken_at: float
    sources: tuple[str, ...]
    values: Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigSnapshotRecord:
    """A labelled copy of live configuration values (secrets already redacted)."""

    snapshot_id: int
    label: str
    values: Mapping[str, Any]
    created_at: float
