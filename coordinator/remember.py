"""Bringing agent memory up to date with the queue, for state changes made outside the fleet.

The fleet records its own attempts as they start and end. Everything else — `coordinator
claim`, `complete`, `fail`, `tasks add`, `retry`, `cancel` — changes a task in the queue
only; `remember` then mirrors that task's queue record into the memory: its state, an ending
for every attempt the queue has ended, and an open attempt for a live lease. The queue is the
source of truth: memory attempts are matched to the queue's history in order, by attempt
number, and what is missing is added (an attempt the memory never saw starting is recorded
with the time `remember` ran, so its duration is unknown: 0).
"""

from __future__ import annotations

from typing import Protocol

from coordinator.record import TaskRecord
from coordinator.task import TaskState

__all__ = ["MemoryOfAttempts", "remember", "remember_heartbeat"]

_ALL = 1_000_000  # every attempt of one task


class _Attempt(Protocol):
    attempt_id: int
    attempt: int
    started_at: float
    outcome: object | None


class MemoryOfAttempts(Protocol):
    """What `remember` needs of agent memory (memory_db.AgentMemory satisfies it)."""

    def record_task(self, task_id: str, *, title: str, prompt: str, priority: str, state: str,
                    created_by: str | None) -> None: ...

    def start_attempt(self, task_id: str, *, attempt: int, agent: str,
                      log_path: str | None) -> int: ...

    def finish_attempt(self, attempt_id: int, *, outcome: str, exit_code: int | None,
                       reason: str | None = None) -> None: ...

    def attempts(self, task_id: str | None = None, *, limit: int = ...) -> list[_Attempt]: ...

    def record_heartbeat(self, attempt_id: int, *, lease_expires_at: float,
                         count: int = 1) -> None: ...


def remember(memory: MemoryOfAttempts, record: TaskRecord) -> None:
    """Make the memory agree with `record`: the task's fields and state, every ended attempt
    ended there too, and the running attempt of a claimed task open."""
    task = record.task
    memory.record_task(task.id, title=task.title, prompt=task.prompt,
                       priority=task.priority.value, state=record.state.value,
                       created_by=task.created_by)
    rows = sorted(memory.attempts(task.id, limit=_ALL), key=lambda r: (r.started_at, r.attempt_id))
    next_row = 0
    for ended in record.history:
        row = rows[next_row] if next_row < len(rows) else None
        if row is not None and row.attempt == ended.attempt:
            next_row += 1
            if row.outcome is not None:
                continue  # already ended there (by the fleet, or by an earlier remember)
            attempt_id = row.attempt_id
        else:
            attempt_id = memory.start_attempt(task.id, attempt=ended.attempt, agent=ended.agent,
                                              log_path=ended.log_path)
        memory.finish_attempt(attempt_id, outcome=ended.outcome.value,
                              exit_code=ended.exit_code, reason=ended.reason)
    if record.state == TaskState.CLAIMED and record.lease is not None \
            and not any(r.outcome is None for r in rows[next_row:]):
        memory.start_attempt(task.id, attempt=record.attempts + 1, agent=record.lease.agent,
                             log_path=None)


def remember_heartbeat(memory: MemoryOfAttempts, record: TaskRecord) -> None:
    """Make the memory agree with `record` (a claimed task whose lease was just renewed) and
    count the renewal on its running attempt."""
    remember(memory, record)
    if record.state != TaskState.CLAIMED or record.lease is None:
        return
    running = [r for r in memory.attempts(record.task.id, limit=_ALL) if r.outcome is None]
    if running:
        newest = max(running, key=lambda r: (r.started_at, r.attempt_id))
        memory.record_heartbeat(newest.attempt_id, lease_expires_at=record.lease.expires_at)
