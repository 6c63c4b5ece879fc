"""What the queue keeps about tasks: records, attempts, claims, rejections."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coordinator.events import (
    Cancelled,
    Claimed,
    Created,
    DependencyFailed,
    Ended,
    Heartbeat,
    QueueEvent,
    Retried,
    Snapshot,
)
from coordinator.lease import Lease
from coordinator.task import Task, TaskState
from memory_db.outcome import AttemptOutcome

__all__ = ["AttemptRecord", "Claim", "IngestResult", "RejectedFile", "TaskRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One finished (or abandoned) attempt at a task."""

    attempt: int
    agent: str
    started_at: float
    ended_at: float
    outcome: AttemptOutcome
    exit_code: int | None = None
    reason: str | None = None
    log_path: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptRecord:
        return cls(**{**data, "outcome": AttemptOutcome(data["outcome"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """Everything the queue knows about one task: the fold of its event log.

    `waiting_for` (pending tasks only, filled in by the queue when it reads records) lists
    the dependencies not done yet; `unknown_dependencies` those of them no task has as its
    id (yet: in watch mode it may still arrive)."""

    task: Task
    state: TaskState
    seq: int
    source: str
    attempts: int = 0  # attempts used up (failed, timed out or lease lost)
    token: int = 0  # fencing token of the latest claim
    not_before: float = 0.0  # a retried task waits for its backoff
    lease: Lease | None = None
    history: tuple[AttemptRecord, ...] = ()
    reason: str | None = None
    updated_at: float = 0.0
    waiting_for: tuple[str, ...] = ()
    unknown_dependencies: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task.to_json(),
            "state": self.state.value,
            "seq": self.seq,
            "source": self.source,
            "attempts": self.attempts,
            "token": self.token,
            "not_before": self.not_before,
            "lease": self.lease.to_json() if self.lease else None,
            "history": [attempt_json(a) for a in self.history],
            "reason": self.reason,
            "updated_at": self.updated_at,
            "waiting_for": list(self.waiting_for),
            "unknown_dependencies": list(self.unknown_dependencies),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskRecord:
        return cls(
            task=Task.from_json(data["task"]), state=TaskState(data["state"]), seq=data["seq"],
            source=data["source"], attempts=data["attempts"], token=data["token"],
            not_before=data["not_before"],
            lease=Lease.from_json(data["lease"]) if data["lease"] else None,
            history=tuple(AttemptRecord.from_json(a) for a in data["history"]),
            reason=data["reason"], updated_at=data["updated_at"],
        )

    @classmethod
    def created(cls, event: Created) -> TaskRecord:
        return cls(task=event.task, state=TaskState.PENDING, seq=event.seq,
                   source=event.source, updated_at=event.at)

    @classmethod
    def from_events(cls, events: list[QueueEvent]) -> TaskRecord:
        """Replay a task's events (its first a `Created` or a `Snapshot`) into its record."""
        first = events[0]
        if isinstance(first, Snapshot):
            record = first.record
        elif isinstance(first, Created):
            record = cls.created(first)
        else:
            raise ValueError(f"a task's log starts with {type(first).__name__}")
        for event in events[1:]:
            record = record.apply(event)
        return record

    def apply(self, event: QueueEvent) -> TaskRecord:
        """The record after `event`."""
        at = event.at
        match event:
            case Claimed(lease=lease):
                return replace(self, state=TaskState.CLAIMED, token=lease.token, lease=lease,
                               updated_at=at)
            case Heartbeat():
                if self.lease is None or self.lease.token != event.token:
                    return self
                lease = replace(self.lease, expires_at=event.expires_at,
                                expires_boot=event.expires_boot,
                                agent_pgid=event.agent_pgid or self.lease.agent_pgid)
                return replace(self, lease=lease, updated_at=at)
            case Ended(attempt=attempt):
                return replace(
                    self, state=event.to, lease=None, updated_at=at,
                    attempts=self.attempts + attempt.outcome.uses_attempt,
                    history=(*self.history, attempt),
                    not_before=self.not_before if event.not_before is None
                    else event.not_before,
                    reason=event.reason,
                )
            case Retried():
                return replace(self, state=TaskState.PENDING, attempts=0, not_before=0.0,
                               reason=None, updated_at=at)
            case Cancelled():
                return replace(self, state=TaskState.CANCELLED, lease=None, reason=event.reason,
                               updated_at=at)
            case DependencyFailed():
                return replace(self, state=TaskState.FAILED, lease=None, reason=event.reason,
                               updated_at=at)
            case Snapshot(record=record):
                return record
            case Created():
                raise ValueError(f"task {self.task.id!r} was created twice")


def attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    return {name: getattr(attempt, name) for name in AttemptRecord.__slots__}


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A won claim: the task, the lease's fencing token, and the attempt number (1-based)."""

    task: Task
    token: int
    agent: str
    attempt: int
    expires_at: float
    source: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedFile:
    """A task file moved aside, with the reason it was rejected."""

    name: str
    path: Path
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    """What one pass over the inbox accepted and rejected."""

    accepted: tuple[str, ...] = ()
    rejected: tuple[RejectedFile, ...] = ()
