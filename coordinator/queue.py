"""The folder queue: task files in, leased claims out, every state a folder on disk.

Layout under the queue's root (the tasks folder):

    *.toml                 the inbox: drop task files here (write them elsewhere, then rename)
    pending/<id>.json      one record per task, in the folder of its state
    claimed/ done/ failed/ cancelled/
    rejected/<file>        a rejected task file, byte for byte, with <file>.error beside it
    sources/<file>         an accepted task file, byte for byte
    logs/<id>/attempt-N.log
    .queue/                locks, the ingest staging folder, counters

Every change of a task happens under that task's file lock (the `filelock` library) and is
made of atomic steps: a record is rewritten by write-then-rename, and a state change is a
rename from one state folder to another, so exactly one claimer wins every race (the kernel
lets only one rename of `pending/<id>.json` succeed, and the lock orders the rest) and a
crash at any instruction leaves every task in exactly one recoverable place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from coordinator.errors import (
    InvalidTransition,
    LeaseLost,
    TaskFileError,
    UnknownTask,
)
from coordinator.lease import Lease, Owner
from coordinator.task import (
    Priority,
    Task,
    TaskState,
    field_line,
    is_valid_id,
    parse_task_file,
    tasks_to_toml,
)

RECORD_STATES = (
    TaskState.PENDING,
    TaskState.CLAIMED,
    TaskState.DONE,
    TaskState.FAILED,
    TaskState.CANCELLED,
)
TERMINAL_FAILURES = (TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One finished (or abandoned) attempt at a task."""

    attempt: int
    agent: str
    started_at: float
    ended_at: float
    outcome: str  # succeeded | failed | timed_out | lease_lost | released
    exit_code: int | None = None
    reason: str | None = None
    log_path: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """Everything the queue knows about one task."""

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
    def from_json(cls, data: dict[str, Any]) -> TaskRecord:
        return cls(
            task=Task.from_json(data["task"]),
            state=TaskState(data["state"]),
            seq=data["seq"],
            source=data["source"],
            attempts=data["attempts"],
            token=data["token"],
            not_before=data["not_before"],
            lease=Lease.from_json(data["lease"]) if data["lease"] else None,
            history=tuple(AttemptRecord(**a) for a in data["history"]),
            reason=data["reason"],
            updated_at=data["updated_at"],
        )


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


@dataclass(slots=True)
class _Candidates:
    """A claimer's cached, sorted view of the pending folder (refreshed, never trusted)."""

    ids: list[str] = field(default_factory=list)
    generation: tuple[int, int] | None = None
    claims_since_refresh: int = 0


class FolderQueue:
    """A task queue in a folder, safe for many processes and threads at once.

    `clock` gives wall-clock seconds (leases are compared across processes);
    `retry_backoff_s` is the base of the exponential wait before a failed task is retried;
    `rescan_every` bounds how many claims a process makes from its cached view of `pending/`
    before listing the folder again (it also relists whenever new work arrives).
    """

    def __init__(
        self,
        root: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        retry_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        rescan_every: int = 100,
        reclaim_every_s: float = 1.0,
    ) -> None:
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        if rescan_every < 1:
            raise ValueError(f"rescan_every must be >= 1, got {rescan_every}")
        self.root = Path(root)
        self._clock = clock
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._rescan_every = rescan_every
        self._reclaim_every_s = reclaim_every_s
        self._internal = self.root / ".queue"
        self._locks_dir = self._internal / "locks"
        self._incoming = self._internal / "incoming"
        self._generation_file = self._internal / "generation"
        self._seq_file = self._internal / "seq"
        for folder in (*RECORD_STATES, TaskState.REJECTED):
            (self.root / folder.value).mkdir(parents=True, exist_ok=True)
        for folder in (self.root / "sources", self.root / "logs", self._locks_dir, self._incoming):
            folder.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()  # guards the caches below across threads
        self._static: dict[str, tuple[int, int, tuple[str, ...]]] = {}  # id -> rank, seq, deps
        self._candidates = _Candidates()
        self._next_reclaim_at = 0.0
        self._owner: Owner | None = None

    # ------------------------------------------------------------------ paths and locks

    def _record_path(self, state: TaskState, task_id: str) -> Path:
        return self.root / state.value / f"{task_id}.json"

    def log_path(self, task_id: str, attempt: int) -> Path:
        """Where the fleet writes the output of one attempt."""
        return self.root / "logs" / task_id / f"attempt-{attempt}.log"

    def _lock(self, name: str, *, timeout_s: float) -> FileLock:
        # A fresh FileLock per use: a shared instance is re-entrant, which would let two
        # threads of one process both "hold" it.
        return FileLock(
            self._locks_dir / f"{name}.lock", timeout=timeout_s, poll_interval=0.001
        )

    @contextlib.contextmanager
    def _task_lock(self, task_id: str, *, timeout_s: float = 10.0) -> Iterator[None]:
        with self._lock(task_id, timeout_s=timeout_s):
            yield

    def _try_task_lock(self, task_id: str) -> FileLock | None:
        lock = self._lock(task_id, timeout_s=0)
        try:
            lock.acquire()
        except Timeout:
            return None
        return lock

    # ------------------------------------------------------------------ records on disk

    def _read(self, state: TaskState, task_id: str) -> TaskRecord | None:
        try:
            data = self._record_path(state, task_id).read_bytes()
        except FileNotFoundError:
            return None
        return TaskRecord.from_json(json.loads(data))

    def _write(self, record: TaskRecord) -> None:
        _atomic_write(
            self._record_path(record.state, record.task.id),
            json.dumps(record.to_json(), separators=(",", ":")).encode(),
        )

    def _move(self, record: TaskRecord, to: TaskState, **changes: Any) -> TaskRecord:
        """Rewrite the record in place, then rename it into the folder of its new state."""
        moved = replace(record, state=to, updated_at=self._clock(), **changes)
        _atomic_write(
            self._record_path(record.state, record.task.id),
            json.dumps(moved.to_json(), separators=(",", ":")).encode(),
        )
        if to != record.state:
            os.rename(
                self._record_path(record.state, record.task.id),
                self._record_path(to, record.task.id),
            )
        return moved

    def _locate(self, task_id: str) -> TaskRecord | None:
        """The task's record wherever it is (read without the lock: a snapshot)."""
        if not is_valid_id(task_id):
            return None
        for _ in range(3):  # a record may move between our looks; look again
            for state in RECORD_STATES:
                record = self._read(state, task_id)
                if record is not None:
                    # The folder is the truth; a record's own state is where it is heading.
                    return replace(record, state=state)
        return None

    def _bump_generation(self) -> None:
        """Tell every claimer that pending work appeared (they relist `pending/`)."""
        _atomic_write(self._generation_file, str(time.time_ns()).encode())

    def _generation(self) -> tuple[int, int]:
        try:
            st = os.stat(self._generation_file)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    # ------------------------------------------------------------------ ingest

    def ingest(self, *, wait_s: float = 0.0) -> IngestResult:
        """Accept or reject every task file in the inbox.

        If another process is ingesting, wait up to `wait_s` for it (by default not at all:
        that process takes care of the inbox) and then return an empty result.
        """
        lock = self._lock("ingest", timeout_s=wait_s)
        try:
            lock.acquire()
        except Timeout:
            return IngestResult()
        try:
            return self._ingest_locked()
        finally:
            lock.release()

    def _inbox(self) -> list[Path]:
        files = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.endswith(".toml") and not entry.name.startswith("."):
                    with contextlib.suppress(OSError):
                        if entry.is_file():
                            files.append((entry.stat().st_mtime_ns, entry.name))
        return [self.root / name for _, name in sorted(files)]

    def _ingest_locked(self) -> IngestResult:
        accepted: list[str] = []
        rejected: list[RejectedFile] = []
        # Files staged by an ingest that crashed half-way are finished first.
        staged = sorted(self._incoming.iterdir())
        inbox = self._inbox()
        if not staged and not inbox:
            return IngestResult()
        known = self._known_ids()
        for path in staged:
            accepted += self._finish_staged(path, known)
        for path in inbox:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                tasks = parse_task_file(path, data=data)
                self._check_against_known(path, data, tasks, known)
            except TaskFileError as exc:
                rejected.append(self._reject(path, exc))
                continue
            staged_path = self._incoming / path.name
            os.rename(path, staged_path)  # from here on the file is ours
            accepted += self._finish_staged(staged_path, known, tasks)
        if accepted:
            self._bump_generation()
        return IngestResult(accepted=tuple(accepted), rejected=tuple(rejected))

    def _finish_staged(
        self, staged: Path, known: dict[str, TaskState], tasks: list[Task] | None = None
    ) -> list[str]:
        source = _free_name(self.root / "sources", staged.name)
        relative = f"sources/{source.name}"
        if tasks is None:
            tasks = parse_task_file(staged)  # it parsed before it was staged
        written = []
        for task in tasks:
            if task.id in known:
                continue  # written before a crash
            record = TaskRecord(
                task=task,
                state=TaskState.PENDING,
                seq=self._next_seq(),
                source=relative,
                updated_at=self._clock(),
            )
            self._write(record)
            known[task.id] = TaskState.PENDING
            self._static[task.id] = (task.priority.rank, record.seq, task.depends_on)
            written.append(task.id)
        os.rename(staged, source)
        return written

    def _known_ids(self) -> dict[str, TaskState]:
        known: dict[str, TaskState] = {}
        for state in RECORD_STATES:
            with os.scandir(self.root / state.value) as entries:
                for entry in entries:
                    if entry.name.endswith(".json"):
                        known[entry.name[:-5]] = state
        return known

    def _check_against_known(
        self, path: Path, data: bytes, tasks: list[Task], known: dict[str, TaskState]
    ) -> None:
        for index, task in enumerate(tasks):
            if task.id in known:
                raise TaskFileError(
                    path,
                    f"task id {task.id!r} is already known (it is {known[task.id]}); "
                    "give the new task another id",
                    line=field_line(data, "id", index),
                    field="id",
                )
        # A cycle must pass through a new task; follow dependencies from each new task.
        new = {task.id: task.depends_on for task in tasks}

        def deps_of(task_id: str) -> tuple[str, ...]:
            if task_id in new:
                return new[task_id]
            if known.get(task_id) in (TaskState.PENDING, TaskState.CLAIMED):
                return self._static_of(task_id)[2]
            return ()

        for index, start in enumerate(new):
            stack, seen = [(start, (start,))], set()
            while stack:
                node, trail = stack.pop()
                for dep in deps_of(node):
                    if dep == start:
                        raise TaskFileError(
                            path,
                            f"dependency cycle: {' -> '.join((*trail, dep))}",
                            line=field_line(data, "depends_on", index),
                            field="depends_on",
                        )
                    if dep not in seen:
                        seen.add(dep)
                        stack.append((dep, (*trail, dep)))

    def _reject(self, path: Path, error: TaskFileError) -> RejectedFile:
        target = _free_name(self.root / TaskState.REJECTED.value, path.name)
        reason = str(error).replace(str(path), path.name, 1)
        _atomic_write(target.with_name(target.name + ".error"), (reason + "\n").encode())
        os.rename(path, target)  # moved aside, never rewritten
        return RejectedFile(name=target.name, path=target, reason=reason)

    def _next_seq(self) -> int:
        try:
            seq = int(self._seq_file.read_text()) + 1
        except FileNotFoundError:
            seq = 1
        _atomic_write(self._seq_file, str(seq).encode())
        return seq

    def _static_of(self, task_id: str) -> tuple[int, int, tuple[str, ...]]:
        """Priority rank, arrival order and dependencies: fixed for a task's life, so cached."""
        static = self._static.get(task_id)
        if static is None:
            record = self._locate(task_id)
            if record is None:
                raise UnknownTask(task_id)
            static = (record.task.priority.rank, record.seq, record.task.depends_on)
            self._static[task_id] = static
        return static

    # ------------------------------------------------------------------ claiming

    def claim(
        self, agent: str, *, lease_s: float, owner: Owner | None = None
    ) -> Claim | None:
        """Claim the next ready task for `agent`, or return None if none is ready.

        Order: priority, then arrival; a task waits for its dependencies to be done and for
        its retry backoff. `owner` marks a long-lived fleet process (see `Owner`).
        """
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        self._housekeeping()
        now = self._clock()
        with self._mutex:
            self._refresh_candidates_if_stale()
            candidates = list(self._candidates.ids)
        skipped: list[str] = []
        claim = None
        for task_id in candidates:
            if not os.path.exists(self._record_path(TaskState.PENDING, task_id)):
                continue  # someone else took it
            if not self._dependencies_ready(task_id):
                skipped.append(task_id)
                continue
            claim = self._try_claim(task_id, agent, lease_s, owner, now)
            if claim is not None:
                break
            skipped.append(task_id)
        with self._mutex:
            if claim is not None:
                self._candidates.claims_since_refresh += 1
                with contextlib.suppress(ValueError):
                    self._candidates.ids.remove(claim.task.id)
            else:
                # Only the tasks still waiting stay; new work bumps the generation.
                self._candidates.ids = skipped
        return claim

    def _refresh_candidates_if_stale(self) -> None:
        generation = self._generation()
        c = self._candidates
        if (
            c.generation == generation
            and c.claims_since_refresh < self._rescan_every
            and c.ids
        ):
            return
        ids = []
        with os.scandir(self.root / TaskState.PENDING.value) as entries:
            for entry in entries:
                if entry.name.endswith(".json"):
                    ids.append(entry.name[:-5])
        keyed = []
        for task_id in ids:
            with contextlib.suppress(UnknownTask):
                rank, seq, _ = self._static_of(task_id)
                keyed.append((rank, seq, task_id))
        keyed.sort()
        self._candidates = _Candidates(
            ids=[task_id for _, _, task_id in keyed], generation=generation
        )

    def _dependencies_ready(self, task_id: str) -> bool:
        """True if every dependency is done; fails the task if one failed or was cancelled."""
        deps = self._static_of(task_id)[2]
        for dep in deps:
            if os.path.exists(self._record_path(TaskState.DONE, dep)):
                continue
            for state in TERMINAL_FAILURES:
                if os.path.exists(self._record_path(state, dep)):
                    self._fail_pending(task_id, f"dependency {dep!r} {state.value}")
                    return False
            return False
        return True

    def _fail_pending(self, task_id: str, reason: str) -> None:
        lock = self._try_task_lock(task_id)
        if lock is None:
            return
        try:
            record = self._read(TaskState.PENDING, task_id)
            if record is not None:
                self._move(record, TaskState.FAILED, reason=reason)
        finally:
            lock.release()

    def _try_claim(
        self, task_id: str, agent: str, lease_s: float, owner: Owner | None, now: float
    ) -> Claim | None:
        lock = self._try_task_lock(task_id)
        if lock is None:
            return None
        try:
            pending = self._record_path(TaskState.PENDING, task_id)
            try:
                data = pending.read_bytes()
            except FileNotFoundError:
                return None
            record = TaskRecord.from_json(json.loads(data))
            if record.state != TaskState.PENDING:
                self._finish_move(record, TaskState.PENDING)
                return None
            if record.not_before > now:
                return None
            token = record.token + 1
            lease = Lease(
                agent=agent, token=token, claimed_at=now, expires_at=now + lease_s, owner=owner
            )
            # Rename first: the kernel lets exactly one rename of the pending file succeed.
            claimed = self._record_path(TaskState.CLAIMED, task_id)
            os.rename(pending, claimed)
            record = replace(
                record, state=TaskState.CLAIMED, token=token, lease=lease, updated_at=now
            )
            self._write(record)
            return Claim(
                task=record.task,
                token=token,
                agent=agent,
                attempt=record.attempts + 1,
                expires_at=lease.expires_at,
                source=self.root / record.source,
            )
        finally:
            lock.release()

    # ------------------------------------------------------------------ lease holders

    @contextlib.contextmanager
    def _held(self, task_id: str, token: int) -> Iterator[TaskRecord]:
        """The claimed record, under its lock, if `token` still holds its lease."""
        if not is_valid_id(task_id):
            raise UnknownTask(task_id)
        with self._task_lock(task_id):
            record = self._read(TaskState.CLAIMED, task_id)
            if record is None:
                where = self._locate(task_id)
                if where is None:
                    raise UnknownTask(task_id)
                raise LeaseLost(task_id, token, f"the task is {where.state}")
            if record.lease is None or record.lease.token != token:
                current = record.lease.token if record.lease else "none"
                raise LeaseLost(task_id, token, f"taken over (current token {current})")
            yield record

    def heartbeat(
        self, task_id: str, token: int, *, lease_s: float, agent_pgid: int | None = None
    ) -> float:
        """Renew the lease for `lease_s` more seconds; return its new expiry.

        Raises `LeaseLost` if the lease was taken over or the task left `claimed`.
        """
        with self._held(task_id, token) as record:
            assert record.lease is not None
            lease = replace(record.lease, expires_at=self._clock() + lease_s)
            if agent_pgid is not None:
                lease = replace(lease, agent_pgid=agent_pgid)
            self._write(replace(record, lease=lease, updated_at=self._clock()))
            return lease.expires_at

    def complete(
        self,
        task_id: str,
        token: int,
        *,
        exit_code: int | None = 0,
        log_path: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Mark the task done. Raises `LeaseLost` if `token` no longer holds it."""
        with self._held(task_id, token) as record:
            attempt = self._attempt(record, "succeeded", exit_code, None, log_path, started_at)
            self._move(record, TaskState.DONE, lease=None, history=(*record.history, attempt))

    def fail(
        self,
        task_id: str,
        token: int,
        *,
        reason: str,
        exit_code: int | None = None,
        log_path: str | None = None,
        started_at: float | None = None,
        outcome: str = "failed",
        permanent: bool = False,
    ) -> TaskState:
        """Record a failed attempt: back to `pending` after a backoff, or `failed` when the
        task has used `max_attempts` (or at once if `permanent`, for a failure no retry can
        fix). Returns the new state. Raises `LeaseLost`."""
        with self._held(task_id, token) as record:
            attempt = self._attempt(record, outcome, exit_code, reason, log_path, started_at)
            return self._after_failed_attempt(record, attempt, permanent=permanent).state

    def release(self, task_id: str, token: int, *, reason: str = "released") -> None:
        """Give the task back to `pending` without using up an attempt (e.g. on shutdown)."""
        with self._held(task_id, token) as record:
            attempt = self._attempt(record, "released", None, reason, None, None)
            self._move(
                record, TaskState.PENDING, lease=None, history=(*record.history, attempt)
            )
        self._bump_generation()

    def _attempt(
        self,
        record: TaskRecord,
        outcome: str,
        exit_code: int | None,
        reason: str | None,
        log_path: str | None,
        started_at: float | None,
    ) -> AttemptRecord:
        assert record.lease is not None
        return AttemptRecord(
            attempt=record.attempts + 1,
            agent=record.lease.agent,
            started_at=started_at if started_at is not None else record.lease.claimed_at,
            ended_at=self._clock(),
            outcome=outcome,
            exit_code=exit_code,
            reason=reason,
            log_path=log_path,
        )

    def _after_failed_attempt(
        self, record: TaskRecord, attempt: AttemptRecord, *, permanent: bool = False
    ) -> TaskRecord:
        attempts = record.attempts + 1
        history = (*record.history, attempt)
        if permanent:
            return self._move(
                record, TaskState.FAILED, lease=None, attempts=attempts, history=history,
                reason=attempt.reason,
            )
        if attempts >= record.task.max_attempts:
            why = f"{attempt.outcome} on attempt {attempts} of {record.task.max_attempts}"
            reason = f"{why}: {attempt.reason}" if attempt.reason else why
            return self._move(
                record, TaskState.FAILED, lease=None, attempts=attempts, history=history,
                reason=reason,
            )
        backoff = min(self._max_backoff_s, self._retry_backoff_s * 2 ** (attempts - 1))
        moved = self._move(
            record, TaskState.PENDING, lease=None, attempts=attempts, history=history,
            not_before=self._clock() + backoff, reason=attempt.reason,
        )
        self._bump_generation()
        return moved

    # ------------------------------------------------------------------ recovery

    def _housekeeping(self) -> None:
        """Ingest new files and, now and then, take back expired leases."""
        if self._inbox() or any(self._incoming.iterdir()):
            self.ingest()
        if self._clock() >= self._next_reclaim_at:
            self._next_reclaim_at = self._clock() + self._reclaim_every_s
            self.reclaim_expired()

    def reclaim_expired(self) -> list[str]:
        """Return to the queue every claimed task whose lease ran out or whose owner died.

        An expired lease uses up an attempt (the agent hung or died); a task out of attempts
        fails. The orphaned agent of a dead owner is killed so the work never runs twice.
        """
        reclaimed = []
        with os.scandir(self.root / TaskState.CLAIMED.value) as entries:
            ids = [e.name[:-5] for e in entries if e.name.endswith(".json")]
        for task_id in ids:
            lock = self._try_task_lock(task_id)
            if lock is None:
                continue  # being claimed or renewed right now
            try:
                record = self._read(TaskState.CLAIMED, task_id)
                if record is None:
                    continue
                if record.state != TaskState.CLAIMED:
                    # A move out of `claimed` was cut short: its record says where it goes.
                    self._finish_move(record, TaskState.CLAIMED)
                    reclaimed.append(task_id)
                    continue
                why = self._lease_problem(record)
                if why is None:
                    continue
                if record.lease is not None and record.lease.agent_pgid:
                    _kill_orphan(record.lease.agent_pgid, task_id)
                attempt = self._attempt(record, "lease_lost", None, why, None, None)
                self._after_failed_attempt(record, attempt)
                reclaimed.append(task_id)
            finally:
                lock.release()
        if reclaimed:
            self._bump_generation()
        return reclaimed

    def _finish_move(self, record: TaskRecord, folder: TaskState) -> None:
        """Complete a move whose record was rewritten but not yet renamed (a crash between)."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(
                self._record_path(folder, record.task.id),
                self._record_path(record.state, record.task.id),
            )
        if record.state == TaskState.PENDING:
            self._bump_generation()

    def _lease_problem(self, record: TaskRecord) -> str | None:
        lease = record.lease
        assert lease is not None  # a claimed record always has one
        if lease.expired(self._clock()):
            return f"lease of agent {lease.agent!r} expired"
        if lease.owner is not None and lease.owner.is_dead():
            return f"owner process {lease.owner.pid} of agent {lease.agent!r} died"
        return None

    # ------------------------------------------------------------------ user actions

    def add(
        self,
        prompt: str,
        *,
        task_id: str | None = None,
        priority: Priority = Priority.NORMAL,
        depends_on: tuple[str, ...] = (),
        **fields: Any,
    ) -> Task:
        """Write a new task file into the inbox (atomically) and ingest it.

        Raises `TaskFileError` if the task is invalid or its id is already known.
        """
        task_id = task_id or f"task-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        target = self.root / f"{task_id}.toml"
        try:
            task = Task(
                id=task_id, prompt=prompt, priority=priority, depends_on=depends_on, **fields
            )
        except ValueError as exc:
            raise TaskFileError(target, str(exc)) from exc
        if self._locate(task_id) is not None:
            raise TaskFileError(target, f"task id {task_id!r} is already known", field="id")
        target = _free_name(self.root, target.name)
        tmp = self.root / f".{target.name}.{os.getpid()}.tmp"
        tmp.write_text(tasks_to_toml([task]))
        os.rename(tmp, target)
        result = self.ingest(wait_s=30.0)
        for rejected in result.rejected:
            if rejected.reason.startswith(f"{target.name}:"):
                raise TaskFileError(target, rejected.reason)
        if self._locate(task_id) is None:  # another process's ingest took it: look again
            self.ingest(wait_s=30.0)
            if self._locate(task_id) is None:
                raise TaskFileError(target, "the task file was not accepted; see rejected/")
        return task

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a pending or claimed task (a running agent loses its lease)."""
        with self._task_lock(task_id):
            record = self._locate(task_id)
            if record is None:
                raise UnknownTask(task_id)
            if record.state not in (TaskState.PENDING, TaskState.CLAIMED):
                raise InvalidTransition(task_id, record.state, "cancel")
            return self._move(record, TaskState.CANCELLED, lease=None, reason="cancelled")

    def retry(self, task_id: str) -> TaskRecord:
        """Send a failed or cancelled task back to `pending` with fresh attempts."""
        with self._task_lock(task_id):
            record = self._locate(task_id)
            if record is None:
                raise UnknownTask(task_id)
            if record.state not in TERMINAL_FAILURES:
                raise InvalidTransition(task_id, record.state, "retry")
            moved = self._move(
                record, TaskState.PENDING, attempts=0, not_before=0.0, reason=None
            )
        self._bump_generation()
        return moved

    # ------------------------------------------------------------------ reading

    def get(self, task_id: str) -> TaskRecord:
        """The task's current record. Raises `UnknownTask`."""
        record = self._locate(task_id)
        if record is None:
            raise UnknownTask(task_id)
        return record

    def records(self, state: TaskState | None = None) -> list[TaskRecord]:
        """Every task's record (of one state if given), in claim order."""
        states = RECORD_STATES if state is None else (state,)
        out = []
        for st in states:
            if st == TaskState.REJECTED:
                continue
            folder = self.root / st.value
            for path in folder.glob("*.json"):
                record = self._read(st, path.stem)
                if record is not None:
                    out.append(replace(record, state=st))
        out.sort(key=lambda r: (r.task.priority.rank, r.seq))
        return out

    def rejected(self) -> list[RejectedFile]:
        """Rejected task files with their reasons."""
        out = []
        folder = self.root / TaskState.REJECTED.value
        for error_file in sorted(folder.glob("*.error")):
            path = error_file.with_name(error_file.name.removesuffix(".error"))
            if path.exists():
                reason = error_file.read_text().strip()
                out.append(RejectedFile(name=path.name, path=path, reason=reason))
        return out

    def counts(self) -> dict[TaskState, int]:
        """How many tasks are in each state (rejected counts files)."""
        counts = {}
        for state in RECORD_STATES:
            with os.scandir(self.root / state.value) as entries:
                counts[state] = sum(1 for e in entries if e.name.endswith(".json"))
        counts[TaskState.REJECTED] = len(self.rejected())
        return counts

    def next_ready_at(self) -> float | None:
        """When the next pending task can be claimed (now or after its backoff), or None if
        no pending task can run until something else changes (all wait on dependencies)."""
        self._housekeeping()
        if self._inbox() or any(self._incoming.iterdir()):
            return self._clock()  # another process is ingesting new work right now
        earliest = None
        for record in self.records(TaskState.PENDING):
            if not self._dependencies_ready(record.task.id):
                continue
            if earliest is None or record.not_before < earliest:
                earliest = record.not_before
        return earliest


def _atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename: readers see the old content or the new, never half of either."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem.N.suffix` if that is taken: nothing is overwritten."""
    candidate = folder / name
    n = 1
    while candidate.exists() or candidate.with_name(candidate.name + ".error").exists():
        stem, dot, suffix = name.rpartition(".")
        candidate = folder / (f"{stem}.{n}.{suffix}" if dot else f"{name}.{n}")
        n += 1
    return candidate


def _kill_orphan(pgid: int, task_id: str) -> None:
    """Kill an agent process group left behind by a dead owner, if it is still that agent."""
    try:
        environ = Path(f"/proc/{pgid}/environ").read_bytes()
    except OSError:
        return
    if f"COORDINATOR_TASK_ID={task_id}".encode() in environ.split(b"\0"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
