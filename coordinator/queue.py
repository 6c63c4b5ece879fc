"""The folder queue: task files in, leased claims out, every state a folder on disk.

Layout under the queue's root (the tasks folder):

    *.toml                  the inbox: drop task files here (write them elsewhere, then rename)
    pending/<id>.jsonl      each task's event log, in the folder of its state
    claimed/ done/ failed/ cancelled/
    rejected/<file>         a rejected task file, byte for byte, with <file>.error beside it
    sources/<file>          an accepted task file, byte for byte
    logs/<id>/attempt-N.log
    .queue/                 the ingest lock and staging folder, the task index, counters

A task's record is an append-only log of events (created, claimed, heartbeat, ended,
cancelled, retried, dependency_failed), one JSON object per line; its current state is the
fold of the log. Every change happens under a lock on the log file itself (`flock` through
filelock's `lock_descriptor`; the file keeps its inode as it moves) in two atomic steps:
append the event, then rename the log into the folder of the state it leads to. A crash
between the two leaves the log in the old folder with the new event; whoever next holds
the lock finishes the rename. A crash mid-append leaves a torn last line, which readers
skip and the next append terminates.
So a task is always in exactly one file, nothing is lost, and the hot path creates no
files (creating a file costs ~0.5 ms on this kind of ext4; an append or rename ~20 µs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from filelock import FileLock, Timeout, lock_descriptor

from coordinator.errors import (
    InvalidTransition,
    LeaseLost,
    LockTimeout,
    TaskFileError,
    UnknownTask,
)
from coordinator.lease import Lease, Owner
from coordinator.record import (
    AttemptRecord,
    Claim,
    IngestResult,
    RejectedFile,
    TaskRecord,
)
from coordinator.task import (
    Priority,
    Task,
    TaskState,
    field_line,
    is_valid_id,
    parse_task_file,
    tasks_to_toml,
)
from memory_db.outcome import AttemptOutcome

__all__ = [
    "AttemptRecord",
    "Claim",
    "FolderQueue",
    "IngestResult",
    "RejectedFile",
    "TaskQueue",
    "TaskRecord",
]

RECORD_STATES = (
    TaskState.PENDING,
    TaskState.CLAIMED,
    TaskState.DONE,
    TaskState.FAILED,
    TaskState.CANCELLED,
)
TERMINAL_FAILURES = (TaskState.FAILED, TaskState.CANCELLED)
SUFFIX = ".jsonl"


@runtime_checkable
class TaskQueue(Protocol):
    """What the fleet and the CLI need from a task queue; `FolderQueue` and `MemoryQueue`
    implement it, and one conformance suite (tests/coordinator/test_queue_conformance.py)
    runs against each. Everything is keyed by task id and fencing token, so a networked
    backend (Redis: a hash per task, a sorted set per state) can implement it as well.

    Errors: `UnknownTask`, `InvalidTransition`, `LeaseLost`, `TaskFileError` (from
    `coordinator.errors`)."""

    def ingest(self) -> IngestResult:
        """Accept or reject whatever arrived outside the API (a folder's inbox)."""
        ...

    def add(
        self,
        prompt: str,
        *,
        task_id: str | None = None,
        priority: Priority = Priority.NORMAL,
        depends_on: tuple[str, ...] = (),
        **fields: Any,
    ) -> Task:
        """Queue a new task; raises `TaskFileError` (and changes nothing) if it is invalid,
        its id is known, or it would close a dependency cycle."""
        ...

    def claim(self, agent: str, *, lease_s: float, owner: Owner | None = None) -> Claim | None:
        """The next ready task, leased to `agent`, or None."""
        ...

    def heartbeat(
        self, task_id: str, token: int, *, lease_s: float, agent_pgid: int | None = None
    ) -> float:
        """Renew the lease; returns its new wall-clock expiry. Raises `LeaseLost`."""
        ...

    def complete(
        self, task_id: str, token: int, *, exit_code: int | None = 0,
        log_path: str | None = None, started_at: float | None = None,
    ) -> None:
        """Mark the task done. Raises `LeaseLost`."""
        ...

    def fail(
        self, task_id: str, token: int, *, reason: str, exit_code: int | None = None,
        log_path: str | None = None, started_at: float | None = None,
        outcome: AttemptOutcome = AttemptOutcome.FAILED, permanent: bool = False,
    ) -> TaskState:
        """Record a failed attempt; returns where the task went. Raises `LeaseLost`."""
        ...

    def release(self, task_id: str, token: int, *, reason: str = "released") -> None:
        """Give the task back without using up an attempt. Raises `LeaseLost`."""
        ...

    def reclaim_expired(self) -> list[str]:
        """Take back tasks whose lease ran out or whose owner died; returns their ids."""
        ...

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a pending or claimed task."""
        ...

    def retry(self, task_id: str) -> TaskRecord:
        """Send a failed or cancelled task back to pending with fresh attempts."""
        ...

    def get(self, task_id: str) -> TaskRecord:
        """The task's current record. Raises `UnknownTask`."""
        ...

    def records(self, state: TaskState | None = None) -> list[TaskRecord]:
        """Every task's record (of one state if given), in claim order."""
        ...

    def rejected(self) -> list[RejectedFile]:
        """Rejected task files with their reasons."""
        ...

    def counts(self) -> dict[TaskState, int]:
        """How many tasks are in each state."""
        ...

    def next_ready_at(self) -> float | None:
        """When the next pending task can be claimed, or None if none can until something
        else changes."""
        ...

    def log_path(self, task_id: str, attempt: int) -> Path:
        """Where the fleet writes the output of one attempt."""
        ...


class _Candidates:
    """A claimer's sorted view of `pending/`: refreshed when new work arrives, never trusted
    (each candidate is checked on disk before it is claimed)."""

    __slots__ = ("claims", "generation", "ids", "start")

    def __init__(self, ids: list[str] | None = None, generation: int = -1) -> None:
        self.ids = ids or []
        self.generation = generation
        self.claims = 0  # claims made from this view
        self.start = 0  # every id before this one is known to have left `pending/`


class _Log:
    """A task's event log as read from disk: its record, whether its last line was torn by
    a crash (the next append must start on a fresh line), and, while open for changes, the
    locked descriptor and the folder it is in."""

    __slots__ = ("fd", "folder", "inode", "record", "torn")

    def __init__(self, record: TaskRecord, *, torn: bool, inode: int) -> None:
        self.record, self.torn, self.inode = record, torn, inode
        self.fd = -1
        self.folder = record.state


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
        rescan_every: int = 1000,
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
        internal = self.root / ".queue"
        self._locks_dir = internal / "locks"
        self._incoming = internal / "incoming"
        self._index_path = internal / "index"
        self._generation_path = str(internal / "generation")
        self._seq_path = internal / "seq"
        for state in (*RECORD_STATES, TaskState.REJECTED):
            (self.root / state.value).mkdir(parents=True, exist_ok=True)
        for folder in (self.root / "sources", self.root / "logs", self._locks_dir,
                       self._incoming):
            folder.mkdir(parents=True, exist_ok=True)
        with open(self._generation_path, "ab"):
            pass
        # Plain string prefixes: the claim path builds thousands of paths a second.
        self._dirs = {state: f"{self.root}/{state.value}/" for state in RECORD_STATES}
        self._mutex = threading.Lock()  # guards the caches below across threads
        self._static: dict[str, tuple[int, int, tuple[str, ...]]] = {}  # rank, seq, deps
        self._index_offset = 0
        self._done: set[str] = set()  # ids seen in done/: done is final
        self._not_before: dict[str, float] = {}  # backoffs seen, per view of pending/
        self._candidates = _Candidates()
        self._next_reclaim_at = 0.0
        self._inbox_seen = (0.0, 0.0)  # the inbox folder's mtime when listed, and when

    # ------------------------------------------------------------------ paths and locks

    def _path(self, state: TaskState, task_id: str) -> str:
        return f"{self._dirs[state]}{task_id}{SUFFIX}"

    def log_path(self, task_id: str, attempt: int) -> Path:
        """Where the fleet writes the output of one attempt."""
        return self.root / "logs" / task_id / f"attempt-{attempt}.log"

    @contextlib.contextmanager
    def _opened(
        self, task_id: str, first: TaskState | None = None, *, wait_s: float = 10.0
    ) -> Iterator[_Log | None]:
        """The task's log, open and locked for changes until the block ends.

        The lock is `flock` on the log itself (through filelock's `lock_descriptor`): the
        file keeps its inode as it moves between folders, so whoever holds it excludes every
        other changer, wherever they found the file. Yields None if the task is unknown, or
        if it is locked and `wait_s` is 0; raises `LockTimeout` after a longer wait.
        `first` is the folder to look in first."""
        opened = self._open_any(task_id, first)
        if opened is None:
            yield None
            return
        fd, folder = opened
        try:
            deadline = time.monotonic() + wait_s
            while not lock_descriptor(fd, blocking=False):
                if wait_s <= 0:
                    yield None
                    return
                if time.monotonic() >= deadline:
                    raise LockTimeout(task_id, wait_s)
                time.sleep(0.001)  # a lock is held for a few file operations at most
            log = _parse(_read_all(fd), os.fstat(fd).st_ino)
            if log is None:
                yield None
                return
            log.fd = fd
            log.folder = self._find(task_id, log, folder)
            if log.folder != log.record.state:  # the event was written, the rename was not
                self._move(log)
            yield log
        finally:
            os.close(fd)  # closing releases the lock

    def _open_any(self, task_id: str, first: TaskState | None) -> tuple[int, TaskState] | None:
        order = RECORD_STATES if first is None else (first, *RECORD_STATES)
        for _ in range(3):  # the log may move between our looks; look again
            for folder in order:
                try:
                    return os.open(self._path(folder, task_id), os.O_RDWR | os.O_APPEND), folder
                except FileNotFoundError:
                    continue
        return None

    def _find(self, task_id: str, log: _Log, opened_in: TaskState) -> TaskState:
        """The folder holding our (locked) log: moves finish under the lock, so it is where
        its state says, where we opened it, or — after a crash — where the move began."""
        for folder in (log.record.state, opened_in, *RECORD_STATES):
            try:
                if os.stat(self._path(folder, task_id)).st_ino == log.inode:
                    return folder
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"the log of task {task_id!r} vanished")

    def _move(self, log: _Log) -> None:
        task_id = log.record.task.id
        os.rename(self._path(log.folder, task_id), self._path(log.record.state, task_id))
        log.folder = log.record.state

    def _read(self, folder: TaskState, task_id: str) -> _Log | None:
        """The log in `folder`, read without the lock (a snapshot, for readers)."""
        try:
            fd = os.open(self._path(folder, task_id), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return _parse(_read_all(fd), 0)
        finally:
            os.close(fd)

    def _record(self, log: _Log, event: dict[str, Any]) -> TaskRecord:
        """Append `event` to the (locked) log, then move it to the folder of its new state."""
        event["at"] = self._clock()
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        os.write(log.fd, b"\n" + line if log.torn else line)
        log.torn = False
        log.record = log.record._apply(event)
        if log.record.state != log.folder:
            self._move(log)
        return log.record

    def _locate(self, task_id: str) -> TaskRecord | None:
        """The task's record wherever it is (a snapshot, read without the lock)."""
        if not is_valid_id(task_id):
            return None
        for _ in range(3):  # the log may move between our looks; look again
            for folder in RECORD_STATES:
                log = self._read(folder, task_id)
                if log is not None:
                    return log.record
        return None

    def _bump_generation(self) -> None:
        """Tell every claimer that pending work appeared (they relist `pending/`)."""
        fd = os.open(self._generation_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b".")  # the file's size is the generation: it only ever grows
        finally:
            os.close(fd)

    def _generation(self) -> int:
        try:
            return os.stat(self._generation_path).st_size
        except FileNotFoundError:
            return 0

    # ------------------------------------------------------------------ ingest

    def ingest(self, *, wait_s: float = 0.0) -> IngestResult:
        """Accept or reject every task file in the inbox.

        If another process is ingesting, wait up to `wait_s` for it (by default not at all:
        that process takes care of the inbox) and then return an empty result.
        """
        lock = FileLock(self._locks_dir / "ingest.lock", mode=0o600, poll_interval=0.001)
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            return IngestResult()
        try:
            return self._ingest_locked()
        finally:
            lock.release()

    def _inbox(self) -> list[Path]:
        """Task files waiting in the inbox, oldest first (checked before every claim)."""
        names = [n for n in os.listdir(self.root) if n.endswith(".toml") and n[0] != "."]
        files = []
        for name in names:
            with contextlib.suppress(OSError):
                st = os.stat(f"{self.root}/{name}")
                if stat.S_ISREG(st.st_mode):
                    files.append((st.st_mtime_ns, name))
        return [self.root / name for _, name in sorted(files)]

    def _ingest_locked(self) -> IngestResult:
        staged = sorted(self._incoming.iterdir())  # left by an ingest that crashed half-way
        inbox = self._inbox()
        if not staged and not inbox:
            return IngestResult()
        accepted: list[str] = []
        rejected: list[RejectedFile] = []
        known = self._known_ids()
        seq = _read_int(self._seq_path)
        for path in staged:
            written, seq = self._finish_staged(path, known, seq)
            accepted += written
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
            written, seq = self._finish_staged(staged_path, known, seq, tasks)
            accepted += written
        if accepted:
            _atomic_write(str(self._seq_path), str(seq).encode())
            self._bump_generation()
        return IngestResult(accepted=tuple(accepted), rejected=tuple(rejected))

    def _finish_staged(
        self, staged: Path, known: dict[str, TaskState], seq: int,
        tasks: list[Task] | None = None,
    ) -> tuple[list[str], int]:
        source = _free_name(self.root / "sources", staged.name)
        if tasks is None:
            tasks = parse_task_file(staged)  # it parsed before it was staged
        new = [task for task in tasks if task.id not in known]  # others: written before a crash
        created = []
        for task in new:
            seq += 1
            created.append({"event": "created", "task": task.to_json(), "seq": seq,
                            "source": f"sources/{source.name}", "at": self._clock()})
        # The index first: a task the index misses is still found (by reading its log).
        with open(self._index_path, "a") as index:
            index.write("".join(
                f"{c['seq']}\t{t.priority.rank}\t{t.id}\t{','.join(t.depends_on)}\n"
                for c, t in zip(created, new, strict=True)
            ))
        for event, task in zip(created, new, strict=True):
            line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            _atomic_write(self._path(TaskState.PENDING, task.id), line)
            known[task.id] = TaskState.PENDING
            self._static[task.id] = (task.priority.rank, event["seq"], task.depends_on)
        os.rename(staged, source)
        return [t.id for t in new], seq

    def _known_ids(self) -> dict[str, TaskState]:
        known: dict[str, TaskState] = {}
        for state in RECORD_STATES:
            with os.scandir(self._dirs[state]) as entries:
                for entry in entries:
                    if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                        known[entry.name[: -len(SUFFIX)]] = state
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
                with contextlib.suppress(UnknownTask):
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
        _atomic_write(str(target) + ".error", (reason + "\n").encode())
        os.rename(path, target)  # moved aside, never rewritten
        return RejectedFile(name=target.name, path=target, reason=reason)

    def _read_index(self) -> None:
        """Learn priority, order and dependencies of new tasks from the index ingest keeps."""
        try:
            with open(self._index_path, "rb") as index:
                index.seek(self._index_offset)
                chunk = index.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        for line in chunk[:end].decode().splitlines():
            seq, rank, task_id, deps = line.split("\t")
            self._static[task_id] = (int(rank), int(seq), tuple(deps.split(",")) if deps else ())
        self._index_offset += end

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
            view = self._fresh_view()
            ids, first = view.ids, view.start
        pending_dir = self._dirs[TaskState.PENDING]
        leading_gone = first
        claim = None
        for i in range(first, len(ids)):
            task_id = ids[i]
            if not os.path.exists(f"{pending_dir}{task_id}{SUFFIX}"):
                if i == leading_gone:
                    leading_gone += 1  # taken by someone: skip it from now on
                continue
            if self._not_before.get(task_id, 0.0) > now or not self._dependencies_ready(task_id):
                continue
            claim = self._try_claim(task_id, agent, lease_s, owner, now)
            if claim is not None:
                break
        with self._mutex:
            if self._candidates is view:
                view.start = max(view.start, leading_gone)
                view.claims += claim is not None
        return claim

    def _fresh_view(self) -> _Candidates:
        """The cached view of `pending/`, relisted if new work arrived or it is worn out."""
        generation = self._generation()
        view = self._candidates
        if (
            view.generation == generation
            and view.claims < self._rescan_every
            and view.start < len(view.ids)
        ):
            return view
        self._read_index()
        keyed = []
        with os.scandir(self._dirs[TaskState.PENDING]) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(SUFFIX) and not name.startswith("."):
                    task_id = name[: -len(SUFFIX)]
                    with contextlib.suppress(UnknownTask):
                        rank, seq, _ = self._static_of(task_id)
                        keyed.append((rank, seq, task_id))
        keyed.sort()
        self._not_before.clear()
        self._candidates = _Candidates([task_id for _, _, task_id in keyed], generation)
        return self._candidates

    def _dependencies_ready(self, task_id: str) -> bool:
        """True if every dependency is done; fails the task if one failed or was cancelled."""
        for dep in self._static_of(task_id)[2]:
            if dep in self._done:
                continue
            if os.path.exists(self._path(TaskState.DONE, dep)):
                self._done.add(dep)
                continue
            for state in TERMINAL_FAILURES:
                if os.path.exists(self._path(state, dep)):
                    self._fail_pending(task_id, f"dependency {dep!r} {state.value}")
                    return False
            return False
        return True

    def _fail_pending(self, task_id: str, reason: str) -> None:
        with self._opened(task_id, TaskState.PENDING, wait_s=0) as log:
            if log is not None and log.record.state == TaskState.PENDING:
                self._record(log, {"event": "dependency_failed", "reason": reason})

    def _try_claim(
        self, task_id: str, agent: str, lease_s: float, owner: Owner | None, now: float
    ) -> Claim | None:
        with self._opened(task_id, TaskState.PENDING, wait_s=0) as log:
            if log is None or log.record.state != TaskState.PENDING:
                return None  # being changed right now, or taken meanwhile
            if log.record.not_before > now:
                self._not_before[task_id] = log.record.not_before
                return None
            token = log.record.token + 1
            lease = Lease(
                agent=agent, token=token, claimed_at=now, expires_at=now + lease_s, owner=owner
            )
            record = self._record(log, {"event": "claimed", "lease": lease.to_json()})
            return Claim(
                task=record.task,
                token=token,
                agent=agent,
                attempt=record.attempts + 1,
                expires_at=lease.expires_at,
                source=Path(f"{self.root}/{record.source}"),
            )

    # ------------------------------------------------------------------ lease holders

    @contextlib.contextmanager
    def _held(self, task_id: str, token: int) -> Iterator[_Log]:
        """The claimed task's log, under its lock, if `token` still holds its lease."""
        if not is_valid_id(task_id):
            raise UnknownTask(task_id)
        with self._opened(task_id, TaskState.CLAIMED) as log:
            if log is None:
                raise UnknownTask(task_id)
            record = log.record
            if record.state != TaskState.CLAIMED:
                raise LeaseLost(task_id, token, f"the task is {record.state}")
            if record.lease is None or record.lease.token != token:
                current = record.lease.token if record.lease else "none"
                raise LeaseLost(task_id, token, f"taken over (current token {current})")
            yield log

    def heartbeat(
        self, task_id: str, token: int, *, lease_s: float, agent_pgid: int | None = None
    ) -> float:
        """Renew the lease for `lease_s` more seconds; return its new expiry.

        Raises `LeaseLost` if the lease was taken over or the task left `claimed`.
        """
        with self._held(task_id, token) as log:
            expires_at = self._clock() + lease_s
            self._record(log, {"event": "heartbeat", "token": token, "expires_at": expires_at,
                               "agent_pgid": agent_pgid})
            return expires_at

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
        with self._held(task_id, token) as log:
            attempt = self._attempt(log.record, AttemptOutcome.SUCCEEDED, exit_code, None, log_path,
                                    started_at)
            self._record(log, {"event": "ended", "attempt": attempt, "to": TaskState.DONE})

    def fail(
        self,
        task_id: str,
        token: int,
        *,
        reason: str,
        exit_code: int | None = None,
        log_path: str | None = None,
        started_at: float | None = None,
        outcome: AttemptOutcome = AttemptOutcome.FAILED,
        permanent: bool = False,
    ) -> TaskState:
        """Record a failed attempt: back to `pending` after a backoff, or `failed` when the
        task has used `max_attempts` (or at once if `permanent`, for a failure no retry can
        fix). Returns the new state. Raises `LeaseLost`."""
        with self._held(task_id, token) as log:
            attempt = self._attempt(log.record, outcome, exit_code, reason, log_path,
                                    started_at)
            return self._after_failed_attempt(log, attempt, permanent=permanent).state

    def release(self, task_id: str, token: int, *, reason: str = "released") -> None:
        """Give the task back to `pending` without using up an attempt (e.g. on shutdown)."""
        with self._held(task_id, token) as log:
            attempt = self._attempt(log.record, AttemptOutcome.RELEASED, None, reason, None, None)
            self._record(log, {"event": "ended", "attempt": attempt, "to": TaskState.PENDING})
        self._bump_generation()

    def _attempt(
        self,
        record: TaskRecord,
        outcome: AttemptOutcome,
        exit_code: int | None,
        reason: str | None,
        log_path: str | None,
        started_at: float | None,
    ) -> dict[str, Any]:
        assert record.lease is not None
        return {
            "attempt": record.attempts + 1,
            "agent": record.lease.agent,
            "started_at": started_at if started_at is not None else record.lease.claimed_at,
            "ended_at": self._clock(),
            "outcome": outcome,
            "exit_code": exit_code,
            "reason": reason,
            "log_path": log_path,
        }

    def _after_failed_attempt(
        self, log: _Log, attempt: dict[str, Any], *, permanent: bool = False
    ) -> TaskRecord:
        record = log.record
        attempts = record.attempts + 1
        if permanent or attempts >= record.task.max_attempts:
            reason = attempt["reason"]
            if not permanent:
                why = f"{attempt['outcome']} on attempt {attempts} of {record.task.max_attempts}"
                reason = f"{why}: {reason}" if reason else why
            return self._record(log, {"event": "ended", "attempt": attempt,
                                      "to": TaskState.FAILED, "reason": reason})
        backoff = min(self._max_backoff_s, self._retry_backoff_s * 2 ** (attempts - 1))
        moved = self._record(log, {"event": "ended", "attempt": attempt, "to": TaskState.PENDING,
                                   "not_before": self._clock() + backoff,
                                   "reason": attempt["reason"]})
        self._bump_generation()
        return moved

    # ------------------------------------------------------------------ recovery

    def _inbox_changed(self) -> bool:
        """Whether a file may have arrived in the inbox since we last listed it.

        The folder's mtime changes when an entry is added. It is coarse (a few ms), so an
        unchanged mtime proves nothing new only if it was already older than our last look
        by more than that coarseness; otherwise list again."""
        try:
            mtime = os.stat(self.root).st_mtime
        except FileNotFoundError:
            return False
        seen_mtime, listed_at = self._inbox_seen
        if mtime == seen_mtime and seen_mtime < listed_at - 0.05:
            return False
        self._inbox_seen = (mtime, time.time())
        return True

    def _housekeeping(self) -> None:
        """Ingest new files and, now and then, finish a crashed ingest and take back expired
        leases."""
        if self._inbox_changed() and self._inbox():
            self.ingest()
        if self._clock() >= self._next_reclaim_at:
            self._next_reclaim_at = self._clock() + self._reclaim_every_s
            if os.listdir(self._incoming):
                self.ingest()
            self.reclaim_expired()

    def reclaim_expired(self) -> list[str]:
        """Return to the queue every claimed task whose lease ran out or whose owner died.

        An expired lease uses up an attempt (the agent hung or died); a task out of attempts
        fails. The orphaned agent of a dead owner is killed so the work never runs twice.
        """
        reclaimed = []
        with os.scandir(self._dirs[TaskState.CLAIMED]) as entries:
            ids = [e.name[: -len(SUFFIX)] for e in entries
                   if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
        for task_id in ids:
            with self._opened(task_id, TaskState.CLAIMED, wait_s=0) as log:
                if log is None or log.record.state != TaskState.CLAIMED:
                    continue  # being changed right now, finished, or a cut-short move
                why = self._lease_problem(log.record)
                if why is None:
                    continue
                lease = log.record.lease
                if lease is not None and lease.agent_pgid:
                    _kill_orphan(lease.agent_pgid, task_id)
                attempt = self._attempt(log.record, AttemptOutcome.LEASE_LOST, None, why, None,
                                        None)
                self._after_failed_attempt(log, attempt)
                reclaimed.append(task_id)
        if reclaimed:
            self._bump_generation()
        return reclaimed

    def _lease_problem(self, record: TaskRecord) -> str | None:
        lease = record.lease
        assert lease is not None  # a claimed task always has one
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
        return self._user_action(task_id, "cancel", (TaskState.PENDING, TaskState.CLAIMED),
                                 {"event": "cancelled", "reason": "cancelled"})

    def retry(self, task_id: str) -> TaskRecord:
        """Send a failed or cancelled task back to `pending` with fresh attempts."""
        record = self._user_action(task_id, "retry", TERMINAL_FAILURES, {"event": "retried"})
        self._bump_generation()
        return record

    def _user_action(
        self, task_id: str, action: str, allowed: tuple[TaskState, ...], event: dict[str, Any]
    ) -> TaskRecord:
        """Record `event` if the task is in one of the `allowed` states; raise otherwise."""
        if not is_valid_id(task_id):
            raise UnknownTask(task_id)
        with self._opened(task_id) as log:
            if log is None:
                raise UnknownTask(task_id)
            if log.record.state not in allowed:
                raise InvalidTransition(task_id, log.record.state, action)
            return self._record(log, event)

    # ------------------------------------------------------------------ reading

    def get(self, task_id: str) -> TaskRecord:
        """The task's current record. Raises `UnknownTask`."""
        record = self._locate(task_id)
        if record is None:
            raise UnknownTask(task_id)
        return record

    def records(self, state: TaskState | None = None) -> list[TaskRecord]:
        """Every task's record (of one state if given), in claim order."""
        out = []
        for folder in RECORD_STATES if state is None else (state,):
            if folder == TaskState.REJECTED:
                continue
            with os.scandir(self._dirs[folder]) as entries:
                names = [e.name for e in entries
                         if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
            for name in names:
                log = self._read(folder, name[: -len(SUFFIX)])
                if log is not None and (state is None or log.record.state == state):
                    out.append(log.record)
        return sorted(out, key=lambda r: (r.task.priority.rank, r.seq))

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
            with os.scandir(self._dirs[state]) as entries:
                counts[state] = sum(
                    1 for e in entries if e.name.endswith(SUFFIX) and not e.name.startswith(".")
                )
        counts[TaskState.REJECTED] = len(self.rejected())
        return counts

    def next_ready_at(self) -> float | None:
        """When the next pending task can be claimed (now or after its backoff), or None if
        no pending task can run until something else changes (all wait on dependencies)."""
        self._housekeeping()
        if self._inbox() or os.listdir(self._incoming):
            return self._clock()  # another process is ingesting new work right now
        earliest = None
        for record in self.records(TaskState.PENDING):
            if not self._dependencies_ready(record.task.id):
                continue
            if earliest is None or record.not_before < earliest:
                earliest = record.not_before
        return earliest


def _atomic_write(path: str, data: bytes) -> None:
    """Write-then-rename: readers see the old content or the new, never half of either."""
    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: bytes, inode: int) -> _Log | None:
    events = []
    for line in data.split(b"\n"):
        if line:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # torn by a crash mid-append (or being appended right now)
    if not events or events[0].get("event") != "created":
        return None  # a create cut short; ingest rewrites it
    return _Log(TaskRecord.from_events(events), torn=not data.endswith(b"\n"), inode=inode)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except FileNotFoundError:
        return 0


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
