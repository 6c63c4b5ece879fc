"""What the queue keeps about tasks: records, attempts, claims, rejections."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coordinator.lease import Lease
from coordinator.task import Task, TaskState
from memory_db.outcome import AttemptOutcome


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


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """Everything the queue knows about one task: the fold of its event log."""

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
            "history": [_attempt_json(a) for a in self.history],
            "reason": self.reason,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_events(cls, events: list[dict[str, Any]]) -> TaskRecord:
        """Replay a task's event log (see `coordinator.queue`) into its current record."""
        first = events[0]
        record = cls(
            task=Task.from_json(first["task"]),
            state=TaskState.PENDING,
            seq=first["seq"],
            source=first["source"],
            updated_at=first["at"],
        )
        for event in events[1:]:
            record = record._apply(event)
        return record

    def _apply(self, event: dict[str, Any]) -> TaskRecord:
        kind, at = event["event"], event["at"]
        if kind == "claimed":
            lease = Lease.from_json(event["lease"])
            return replace(self, state=TaskState.CLAIMED, token=lease.token, lease=lease,
                           updated_at=at)
        if kind == "heartbeat":
            if self.lease is None or self.lease.token != event["token"]:
                return self
            lease = replace(self.lease, expires_at=event["expires_at"],
                            agent_pgid=event.get("agent_pgid") or self.lease.agent_pgid)
            return replace(self, lease=lease, updated_at=at)
        if kind == "ended":
            data = event["attempt"]
            attempt = AttemptRecord(**{**data, "outcome": AttemptOutcome(data["outcome"])})
            used = attempt.outcome.uses_attempt
            return replace(
                self, state=TaskState(event["to"]), lease=None, updated_at=at,
                attempts=self.attempts + used, history=(*self.history, attempt),
                not_before=event.get("not_before", self.not_before),
                reason=event.get("reason"),
            )
        if kind == "retried":
            return replace(self, state=TaskState.PENDING, attempts=0, not_before=0.0,
                           reason=None, updated_at=at)
        if kind in ("cancelled", "dependency_failed"):
            to = TaskState.CANCELLED if kind == "cancelled" else TaskState.FAILED
            return replace(self, state=to, lease=None, reason=event["reason"], updated_at=at)
        raise ValueError(f"unknown task event {kind!r}")


def _attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
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
