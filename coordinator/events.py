"""A task's life as typed events: what the queue appends to a task's log, one JSON line each.

A task's record (`coordinator.record.TaskRecord`) is the fold of its events. On disk each
event is a JSON object whose `"event"` key names its kind; `to_json` / `from_json` are the
only places that know the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coordinator.lease import Lease
from coordinator.task import Task, TaskState

if TYPE_CHECKING:
    from coordinator.record import AttemptRecord, TaskRecord

__all__ = [
    "Cancelled",
    "Claimed",
    "Created",
    "DependencyFailed",
    "Ended",
    "Heartbeat",
    "QueueEvent",
    "Retried",
    "Snapshot",
    "event_from_json",
    "event_to_json",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Created:
    """The task was accepted: its first event."""

    task: Task
    seq: int  # arrival order
    source: str  # the original file, relative to the queue's root
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """An agent won the task under `lease`."""

    lease: Lease
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """The holder of `token` renewed its lease."""

    token: int
    expires_at: float
    expires_boot: float
    agent_pgid: int | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended:
    """An attempt ended; the task went `to` a state (pending again after a backoff, done,
    or failed)."""

    attempt: AttemptRecord
    to: TaskState
    not_before: float | None = None
    reason: str | None = None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """A user cancelled the task."""

    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Retried:
    """A user sent a failed or cancelled task back with fresh attempts."""

    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DependencyFailed:
    """A dependency failed, was cancelled or rejected: this task can never run."""

    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The whole record so far, so a reader can start here instead of at the first line
    (written every few events: a long-running task's log stays cheap to read)."""

    record: TaskRecord
    at: float


QueueEvent = Created | Claimed | Heartbeat | Ended | Cancelled | Retried | DependencyFailed \
    | Snapshot

_KIND = {Created: "created", Claimed: "claimed", Heartbeat: "heartbeat", Ended: "ended",
         Cancelled: "cancelled", Retried: "retried", DependencyFailed: "dependency_failed",
         Snapshot: "snapshot"}


def event_to_json(event: QueueEvent) -> dict[str, Any]:
    """The event as the JSON object written to the log."""
    from coordinator.record import attempt_json

    out: dict[str, Any] = {"event": _KIND[type(event)]}
    match event:
        case Created():
            out |= {"task": event.task.to_json(), "seq": event.seq, "source": event.source}
        case Claimed():
            out["lease"] = event.lease.to_json()
        case Heartbeat():
            out |= {"token": event.token, "expires_at": event.expires_at,
                    "expires_boot": event.expires_boot, "agent_pgid": event.agent_pgid}
        case Ended():
            out |= {"attempt": attempt_json(event.attempt), "to": event.to.value}
            if event.not_before is not None:
                out["not_before"] = event.not_before
            if event.reason is not None:
                out["reason"] = event.reason
        case Cancelled() | DependencyFailed():
            out["reason"] = event.reason
        case Snapshot():
            out["record"] = event.record.to_json()
        case Retried():
            pass
    out["at"] = event.at
    return out


def event_from_json(data: dict[str, Any]) -> QueueEvent:
    """Read one logged event; raises `ValueError` (or `KeyError`) for a malformed one."""
    from coordinator.record import AttemptRecord, TaskRecord

    kind, at = data["event"], data["at"]
    if kind == "claimed":
        return Claimed(lease=Lease.from_json(data["lease"]), at=at)
    if kind == "heartbeat":
        return Heartbeat(token=data["token"], expires_at=data["expires_at"],
                         expires_boot=data.get("expires_boot", 0.0),
                         agent_pgid=data.get("agent_pgid"), at=at)
    if kind == "ended":
        return Ended(attempt=AttemptRecord.from_json(data["attempt"]), to=TaskState(data["to"]),
                     not_before=data.get("not_before"), reason=data.get("reason"), at=at)
    if kind == "created":
        return Created(task=Task.from_json(data["task"]), seq=data["seq"],
                       source=data["source"], at=at)
    if kind == "cancelled":
        return Cancelled(reason=data["reason"], at=at)
    if kind == "retried":
        return Retried(at=at)
    if kind == "dependency_failed":
        return DependencyFailed(reason=data["reason"], at=at)
    if kind == "snapshot":
        return Snapshot(record=TaskRecord.from_json(data["record"]), at=at)
    raise ValueError(f"unknown task event {kind!r}")
