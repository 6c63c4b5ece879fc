"""`MemoryQueue`: a real `TaskQueue` in one process's memory, for tests and embedding.

The same records, typed events, fencing, backoffs, dependency rules (a failed, cancelled or
rejected dependency fails its dependents; inherited priority; cycle checks against every
task ever added) as `FolderQueue`, under one lock. Claims scan the pending tasks (O(n)):
it is the reference implementation, not the fast one. Nothing survives the process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from coordinator.dependencies import find_cycle, inherited_ranks
from coordinator.errors import InvalidTransition, LeaseLost, TaskFileError, UnknownTask
from coordinator.events import (
    Cancelled,
    Claimed,
    Created,
    DependencyFailed,
    Ended,
    Heartbeat,
    QueueEvent,
    Retried,
)
from coordinator.lease import Lease, Machine, Owner
from coordinator.record import AttemptRecord, Claim, IngestResult, RejectedFile, TaskRecord
from coordinator.task import Priority, Task, TaskState, parse_task_file, tasks_to_toml
from memory_db.outcome import AttemptOutcome

__all__ = ["MemoryQueue"]

_STATES = (TaskState.PENDING, TaskState.CLAIMED, TaskState.DONE, TaskState.FAILED,
           TaskState.CANCELLED)


class MemoryQueue:
    """A `TaskQueue` held in memory. `clock` is wall seconds; `logs_dir` is where the fleet
    writes attempt logs."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, retry_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0, logs_dir: Path | str = "logs",
    ) -> None:
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        self._clock = clock
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._logs = Path(logs_dir)
        self._lock = threading.RLock()
        self._records: dict[str, TaskRecord] = {}
        # The ids of the pending and of the claimed records: what claims and reclaims look at.
        self._pending: set[str] = set()
        self._claimed: set[str] = set()
        self._seq = 0
        self._cleared: set[str] = set()  # ids `clear` removed from the listings
        # Ids only a rejected task file defined (none here: a subclass with an inbox has them)
        self._rejected_ids: set[str] = set()

    # ------------------------------------------------------------------ adding

    def ingest(self) -> IngestResult:
        """Nothing arrives outside the API: always empty."""
        return IngestResult()

    def add(
        self, prompt: str, *, task_id: str | None = None, priority: Priority = Priority.NORMAL,
        depends_on: tuple[str, ...] = (), **fields: Any,
    ) -> Task:
        task_id = task_id or f"task-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        target = Path(f"{task_id}.toml")
        try:
            task = Task(id=task_id, prompt=prompt, priority=priority, depends_on=depends_on,
                        **fields)
        except (ValueError, TypeError) as exc:
            raise TaskFileError(target, str(exc)) from exc
        [task] = parse_task_file(target, data=tasks_to_toml([task]).encode())
        with self._lock:
            if task.id in self._records:
                raise TaskFileError(target, f"task id {task.id!r} is already known (it is "
                                    f"{self._records[task.id].state})", field="id")
            cycle = find_cycle([task.id], lambda t: task.depends_on if t == task.id else (
                self._records[t].task.depends_on if t in self._records else ()))
            if cycle is not None:
                raise TaskFileError(target, f"dependency cycle: {' -> '.join(cycle)}",
                                    field="depends_on")
            self._seq += 1
            self._create(Created(task=task, seq=self._seq, source=target.name, at=self._clock()))
        return task

    def _create(self, created: Created) -> None:
        self._put(TaskRecord.created(created))

    def _put(self, record: TaskRecord) -> TaskRecord:
        """The one place a record changes, keeping `_pending` and `_claimed` true."""
        task_id = record.task.id
        self._records[task_id] = record
        for state, ids in ((TaskState.PENDING, self._pending), (TaskState.CLAIMED, self._claimed)):
            if record.state == state:
                ids.add(task_id)
            else:
                ids.discard(task_id)
        return record

    # ------------------------------------------------------------------ claiming

    def claim(self, agent: str, *, lease_s: float, owner: Owner | None = None) -> Claim | None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        with self._lock:
            self.reclaim_expired()
            now = self._clock()
            record = self._next_ready(now)
            if record is None:
                return None
            lease = Lease(agent=agent, token=record.token + 1, claimed_at=now,
                          expires_at=now + lease_s, lease_s=lease_s, owner=owner)
            record = self._apply(record.task.id, Claimed(lease=lease, at=now))
            return Claim(task=record.task, token=lease.token, agent=agent,
                         attempt=record.attempts + 1, expires_at=lease.expires_at,
                         source=Path(record.source))

    def _next_ready(self, now: float) -> TaskRecord | None:
        """The first ready task in claim order (inherited priority, then arrival), or None;
        fails those whose dependency never can be done."""
        pending = self._ready(now)
        if not pending:
            return None
        if any(self._records[i].task.depends_on for i in self._pending):
            ranks = {i: self._records[i].task.priority.rank for i in self._pending}
            deps = {i: self._records[i].task.depends_on for i in self._pending}
            effective = inherited_ranks(ranks, deps)
            return min(pending, key=lambda r: (effective[r.task.id], r.seq))
        return min(pending, key=lambda r: (r.task.priority.rank, r.seq))

    def _ready(self, now: float) -> list[TaskRecord]:
        """Pending tasks whose dependencies are done and backoff is over (in no order); fails
        those whose dependency never can be done."""
        while True:
            pending = {i: self._records[i] for i in self._pending}
            doomed = False
            for task_id, record in pending.items():
                for dep in record.task.depends_on:
                    other = self._records.get(dep)
                    if other is not None and other.state in (TaskState.FAILED,
                                                             TaskState.CANCELLED):
                        state = other.state.value
                    elif other is None and dep in self._rejected_ids:
                        state = TaskState.REJECTED.value  # until a good file defines it
                    else:
                        continue
                    self._apply(task_id, DependencyFailed(
                        reason=f"dependency {dep!r} {state}", at=now))
                    doomed = True
                    break
            if not doomed:
                break
        return [r for r in pending.values() if r.not_before <= now and all(
            d in self._records and self._records[d].state == TaskState.DONE
            for d in r.task.depends_on)]

    def _apply(self, task_id: str, event: QueueEvent) -> TaskRecord:
        return self._put(self._records[task_id].apply(event))

    def _held(self, task_id: str, token: int) -> TaskRecord:
        record = self._records.get(task_id)
        if record is None:
            raise UnknownTask(task_id)
        if record.state != TaskState.CLAIMED:
            raise LeaseLost(task_id, token, f"the task is {record.state}")
        if record.lease is None or record.lease.token != token:
            current = record.lease.token if record.lease else "none"
            raise LeaseLost(task_id, token, f"taken over (current token {current})")
        return record

    def heartbeat(self, task_id: str, token: int, *, lease_s: float | None = None,
                  agent_pgid: int | None = None) -> float:
        with self._lock:
            lease = self._held(task_id, token).lease
            assert lease is not None
            now = self._clock()
            expires = now + (lease_s if lease_s is not None else lease.lease_s)
            self._apply(task_id, Heartbeat(token=token, expires_at=expires, expires_boot=0.0,
                                           agent_pgid=agent_pgid, at=now))
            return expires

    def complete(self, task_id: str, token: int, *, exit_code: int | None = 0,
                 log_path: str | None = None, started_at: float | None = None) -> None:
        with self._lock:
            attempt = self._attempt(self._held(task_id, token), AttemptOutcome.SUCCEEDED,
                                    exit_code, None, log_path, started_at)
            self._apply(task_id, Ended(attempt=attempt, to=TaskState.DONE, at=attempt.ended_at))

    def fail(self, task_id: str, token: int, *, reason: str, exit_code: int | None = None,
             log_path: str | None = None, started_at: float | None = None,
             outcome: AttemptOutcome = AttemptOutcome.FAILED,
             permanent: bool = False) -> TaskState:
        with self._lock:
            record = self._held(task_id, token)
            attempt = self._attempt(record, AttemptOutcome(outcome), exit_code, reason,
                                    log_path, started_at)
            return self._after_failure(record, attempt, permanent=permanent).state

    def release(self, task_id: str, token: int, *, reason: str = "released") -> None:
        with self._lock:
            attempt = self._attempt(self._held(task_id, token), AttemptOutcome.RELEASED, None,
                                    reason, None, None)
            self._apply(task_id, Ended(attempt=attempt, to=TaskState.PENDING,
                                       at=attempt.ended_at))

    def _attempt(self, record: TaskRecord, outcome: AttemptOutcome, exit_code: int | None,
                 reason: str | None, log_path: str | None,
                 started_at: float | None) -> AttemptRecord:
        assert record.lease is not None
        return AttemptRecord(
            attempt=record.attempts + 1, agent=record.lease.agent,
            started_at=started_at if started_at is not None else record.lease.claimed_at,
            ended_at=self._clock(), outcome=outcome, exit_code=exit_code, reason=reason,
            log_path=log_path)

    def _after_failure(self, record: TaskRecord, attempt: AttemptRecord, *,
                       permanent: bool) -> TaskRecord:
        attempts, task = record.attempts + 1, record.task
        if permanent or attempts >= task.max_attempts:
            reason = attempt.reason
            if not permanent:
                why = f"{attempt.outcome} on attempt {attempts} of {task.max_attempts}"
                reason = f"{why}: {reason}" if reason else why
            return self._apply(task.id, Ended(attempt=attempt, to=TaskState.FAILED,
                                              reason=reason, at=attempt.ended_at))
        backoff = min(self._max_backoff_s, self._retry_backoff_s * 2 ** (attempts - 1))
        return self._apply(task.id, Ended(attempt=attempt, to=TaskState.PENDING,
                                          not_before=attempt.ended_at + backoff,
                                          reason=attempt.reason, at=attempt.ended_at))

    def reclaim_expired(self) -> list[str]:
        reclaimed = []
        with self._lock:
            now, here = self._clock(), Machine.current()
            for task_id in sorted(self._claimed, key=lambda i: self._records[i].seq):
                record = self._records[task_id]
                lease = record.lease
                if lease is None:
                    continue
                if lease.expired(now):
                    why = f"lease of agent {lease.agent!r} expired"
                elif lease.owner is not None and lease.owner.is_dead(here):
                    why = f"owner process {lease.owner.pid} of agent {lease.agent!r} died"
                else:
                    continue
                attempt = self._attempt(record, AttemptOutcome.LEASE_LOST, None, why, None, None)
                self._after_failure(record, attempt, permanent=False)
                reclaimed.append(task_id)
        return reclaimed

    # ------------------------------------------------------------------ user actions

    def cancel(self, task_id: str) -> TaskRecord:
        return self._user_action(task_id, "cancel", (TaskState.PENDING, TaskState.CLAIMED),
                                 Cancelled(reason="cancelled", at=self._clock()))

    def retry(self, task_id: str) -> TaskRecord:
        return self._user_action(task_id, "retry", (TaskState.FAILED, TaskState.CANCELLED),
                                 Retried(at=self._clock()))

    def _user_action(self, task_id: str, action: str, allowed: tuple[TaskState, ...],
                     event: QueueEvent) -> TaskRecord:
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                raise UnknownTask(task_id)
            if record.state not in allowed:
                raise InvalidTransition(task_id, record.state, action)
            return self._apply(task_id, event)

    def clear(self, state: TaskState) -> list[str]:
        """Forget the tasks in `state` from the listings (their ids stay known)."""
        if state not in (TaskState.DONE, TaskState.CANCELLED, TaskState.REJECTED):
            raise ValueError(f"only done, cancelled or rejected can be cleared, not {state}")
        with self._lock:
            cleared = [i for i, r in self._records.items() if r.state == state]
            self._cleared |= set(cleared)
            return cleared

    # ------------------------------------------------------------------ reading

    def get(self, task_id: str) -> TaskRecord:
        with self._lock:
            record = self._records.get(task_id)
            if record is None:
                raise UnknownTask(task_id)
            return self._with_waits(record)

    def _with_waits(self, record: TaskRecord) -> TaskRecord:
        if record.state != TaskState.PENDING:
            return record
        waiting = tuple(d for d in record.task.depends_on
                        if d not in self._records or self._records[d].state != TaskState.DONE)
        unknown = tuple(d for d in waiting if d not in self._records)
        return replace(record, waiting_for=waiting, unknown_dependencies=unknown)

    def records(self, state: TaskState | None = None) -> list[TaskRecord]:
        with self._lock:
            out = [self._with_waits(r) for i, r in self._records.items()
                   if (state is None or r.state == state) and i not in self._cleared]
        return sorted(out, key=lambda r: (r.task.priority.rank, r.seq))

    def rejected(self) -> list[RejectedFile]:
        return []  # `add` refuses bad input; nothing is ever set aside

    def count(self, state: TaskState) -> int:
        return len(self.records(state)) if state != TaskState.REJECTED else 0

    def counts(self) -> dict[TaskState, int]:
        return {state: self.count(state) for state in (*_STATES, TaskState.REJECTED)}

    def next_ready_at(self) -> float | None:
        with self._lock:
            now = self._clock()
            self._ready(now)
            times = [r.not_before for r in self._records.values()
                     if r.state == TaskState.PENDING and all(
                         d in self._records and self._records[d].state == TaskState.DONE
                         for d in r.task.depends_on)]
        return min(times) if times else None

    def log_path(self, task_id: str, attempt: int) -> Path:
        return self._logs / task_id / f"attempt-{attempt}.log"
