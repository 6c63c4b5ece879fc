"""The task queue: the `TaskQueue` protocol, and `FolderQueue`, a queue in a folder that many
processes and threads share safely.

A task's record is an append-only log of typed events (`coordinator.events`), one JSON line
each; its current state is the fold of the log, and its state is also the folder the log is
in (see `coordinator.layout` for every file). Every change happens under a lock on the log
file itself (`flock` through filelock's `lock_descriptor`; the file keeps its inode as it
moves) in two atomic steps: append the event (the whole line, or an error before anything
moves), then rename the log into the folder of the state it leads to (never over another
file). A crash between the two leaves the log in the old folder with the new event, and
someone always finishes the move: whoever next opens the task (every opener checks), the
claimers (they list `pending/`), the reclaim pass (it lists `claimed/` and
`.queue/moving/`, where a move out of `failed/` or `cancelled/` — folders nobody lists — is
announced before it starts). A crash mid-append leaves a torn last line, which readers skip
and the next append terminates. So a task is always in exactly one file, nothing is lost,
and the hot path creates no files (creating a file costs ~0.5 ms on this kind of ext4; an
append or rename ~20 µs).

Claims cost the same with ten tasks or a hundred thousand: each claimer keeps a sorted view
of `pending/` (relisted only when new work appears), blocked tasks wait outside it under
the id they wait for, and `.queue/journal` tells them when that id is done or failed.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from filelock import lock_descriptor

from coordinator.errors import (
    InvalidTransition,
    LeaseLost,
    LockTimeout,
    QueueNotFound,
    TaskFileError,
    UnknownTask,
)
from coordinator.eventlog import LoadedLog, encode, load, load_path
from coordinator.events import (
    Cancelled,
    Claimed,
    DependencyFailed,
    Ended,
    Heartbeat,
    QueueEvent,
    Retried,
    Snapshot,
)
from coordinator.ingest import Ingest, TaskIndex, free_name
from coordinator.layout import RECORD_STATES, SUFFIX, Layout, link_new, rename_new, write_all
from coordinator.lease import Lease, Machine, Owner, boot_clock
from coordinator.orphans import kill_orphan
from coordinator.record import (
    AttemptRecord,
    Claim,
    IngestResult,
    RejectedFile,
    TaskRecord,
)
from coordinator.task import Priority, Task, TaskState, is_valid_id, parse_task_file, tasks_to_toml
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

TERMINAL = (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)
NEVER_DONE = (TaskState.FAILED, TaskState.CANCELLED, TaskState.REJECTED)
UNLISTED = (TaskState.FAILED, TaskState.CANCELLED)  # folders no claimer or reclaim lists
CLEARABLE = (TaskState.DONE, TaskState.CANCELLED, TaskState.REJECTED)
_ARCHIVED = "archived"


@runtime_checkable
class TaskQueue(Protocol):
    """What the fleet and the CLI need from a task queue; `FolderQueue`, `MemoryQueue` and
    `RedisQueue` (`coordinator.redis_queue`) implement it, and one conformance suite
    (tests/coordinator/test_queue_conformance.py) runs against each. Everything is keyed by
    task id and fencing token.

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
        self, task_id: str, token: int, *, lease_s: float | None = None,
        agent_pgid: int | None = None,
    ) -> float:
        """Renew the lease (by default for the length it was claimed with); returns its new
        wall-clock expiry. Raises `LeaseLost`."""
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

    def count(self, state: TaskState) -> int:
        """How many tasks are in `state` (cheaper than `counts()`)."""
        ...

    def clear(self, state: TaskState) -> list[str]:
        """Remove every entry in `state` (done, cancelled or rejected) from the listings,
        keeping the originals in an archive; returns what was removed."""
        ...

    def next_ready_at(self) -> float | None:
        """When the next pending task can be claimed, or None if none can until something
        else changes."""
        ...

    def log_path(self, task_id: str, attempt: int) -> Path:
        """Where the fleet writes the output of one attempt."""
        ...




class _Log:
    """A task's log while open for changes: the record, the locked descriptor, the folder
    its (state) link is in, and what `eventlog.load` learned."""

    __slots__ = ("fd", "folder", "loaded", "record")

    def __init__(self, fd: int, loaded: LoadedLog) -> None:
        self.fd, self.loaded, self.record = fd, loaded, loaded.record
        self.folder: TaskState | str | None = None


class _View:
    """A claimer's view of `pending/`: the claimable tasks sorted by (inherited) priority and
    arrival, and the blocked ones filed under the dependency they wait for. Refreshed when
    new work arrives, never trusted (each candidate is checked on disk before it is
    claimed)."""

    __slots__ = ("blocked", "claims", "edits", "generation", "ids", "key", "start")

    def __init__(self, generation: int = -1) -> None:
        self.ids: list[str] = []
        self.key: dict[str, tuple[int, int]] = {}
        self.blocked: dict[str, list[str]] = {}
        self.generation = generation
        self.claims = 0  # claims made from this view
        self.start = 0  # every id before this one is known to have left `pending/`
        self.edits = 0  # insertions, so a scan knows its indexes may have shifted

    def insert(self, task_id: str) -> None:
        bisect.insort(self.ids, task_id, lo=self.start, key=self.key.__getitem__)
        self.edits += 1


class FolderQueue:
    """A task queue in a folder, safe for many processes and threads at once.

    `clock` gives wall-clock seconds (compared across machines: backoffs, leases held on
    another machine); `boot_clock` seconds since boot (leases held on this machine) and
    `monotonic` this process's own schedule (how often to reclaim). `retry_backoff_s` is
    the base of the exponential wait before a failed task is retried; `rescan_every` bounds
    how many claims a process makes from its view of `pending/` before listing it again (it
    also relists whenever new work arrives). `create=False` refuses (`QueueNotFound`) a
    folder that is not already a queue, and creates nothing. `agents`, if given, are the
    agent profile names a task may name: a file naming another is rejected at ingest.
    `on_ingest`, if given, is called with every ingest pass that accepted something, whichever
    call ran it (an explicit `ingest()` or a claim noticing new files), so a task dropped into
    the folder can be recorded the moment it is accepted.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        boot_clock: Callable[[], float] = boot_clock,
        monotonic: Callable[[], float] = time.monotonic,
        machine: Machine | None = None,
        retry_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        rescan_every: int = 1000,
        reclaim_every_s: float = 1.0,
        snapshot_every: int = 16,
        agents: Collection[str] | None = None,
        on_ingest: Callable[[IngestResult], None] | None = None,
    ) -> None:
        if retry_backoff_s < 0:
            raise ValueError(f"retry_backoff_s must be >= 0, got {retry_backoff_s}")
        if rescan_every < 1:
            raise ValueError(f"rescan_every must be >= 1, got {rescan_every}")
        if snapshot_every < 2:
            raise ValueError(f"snapshot_every must be >= 2, got {snapshot_every}")
        self.root = Path(root)
        self._layout = layout = Layout(self.root)
        if not layout.is_queue():
            if not create:
                raise QueueNotFound(self.root)
            layout.create()
        elif not layout.ids.is_dir():
            _upgrade(layout)
        self._clock = clock
        self._boot_clock = boot_clock
        self._monotonic = monotonic
        self._machine = machine or Machine.current()
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._rescan_every = rescan_every
        self._reclaim_every_s = reclaim_every_s
        self._on_ingest = on_ingest
        self._snapshot_every = snapshot_every
        self._dirs = {state: layout.folder(state) for state in RECORD_STATES}
        self._index = TaskIndex(layout.index)
        self._ingest = Ingest(layout, self._index, clock=clock, journal=self._journal_write,
                              bump=self._bump_generation, agents=agents)
        self._mutex = threading.Lock()  # guards the caches below across threads
        self._ended: dict[str, TaskState] = {}  # the journal so far: latest state per id
        self._journal_offset = 0
        self._journal_fd = -1  # for appending (opened on first use)
        self._not_before: dict[str, float] = {}  # backoffs seen, per view of pending/
        self._view = _View()
        self._next_reclaim_at = 0.0  # on the monotonic clock

    @classmethod
    def open(cls, root: Path | str, *, create: bool = False, **options: Any) -> FolderQueue:
        """The queue in `root`; raises `QueueNotFound` (creating nothing) if there is none
        and `create` is false."""
        return cls(root, create=create, **options)

    # ------------------------------------------------------------------ paths and locks

    def log_path(self, task_id: str, attempt: int) -> Path:
        """Where the fleet writes the output of one attempt."""
        return self.root / "logs" / task_id / f"attempt-{attempt}.log"

    @contextlib.contextmanager
    def _opened(self, task_id: str, *, wait_s: float = 10.0) -> Iterator[_Log | None]:
        """The task's log, open and locked for changes until the block ends, with any
        cut-short move finished.

        The lock is `flock` on the log itself, opened through its id link (which never
        moves): whoever holds it excludes every other changer, wherever they found the file.
        Yields None if the task is unknown, or if it is locked and `wait_s` is 0; raises
        `LockTimeout` after a longer wait."""
        try:
            fd = os.open(self._layout.id_link(task_id), os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            yield None
            return
        try:
            deadline = time.monotonic() + wait_s
            while not lock_descriptor(fd, blocking=False):
                if wait_s <= 0:
                    yield None
                    return
                if time.monotonic() >= deadline:
                    raise LockTimeout(task_id, wait_s)
                time.sleep(0.001)  # a lock is held for a few file operations at most
            loaded = load(fd)
            if loaded is None:
                yield None
                return
            log = _Log(fd, loaded)
            self._settle(task_id, log)
            yield log
        finally:
            os.close(fd)  # closing releases the lock

    def _settle(self, task_id: str, log: _Log) -> None:
        """Find the folder holding our (locked) log and finish a move cut short by a crash."""
        state, inode = log.record.state, log.loaded.inode
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self._dirs[state] + task_id + SUFFIX).st_ino == inode:
                log.folder = state
                return
        for folder in RECORD_STATES:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self._dirs[folder] + task_id + SUFFIX).st_ino == inode:
                    log.folder = folder
                    self._move(log, task_id)  # the event was written, the rename was not
                    return
        archived = self._layout.archive / state.value / f"{task_id}{SUFFIX}"
        if archived.exists():
            log.folder = _ARCHIVED
        elif os.fstat(log.fd).st_nlink == 1:  # only the id link: a create cut short
            link_new(self._layout.id_link(task_id), self._dirs[state] + task_id + SUFFIX)
            log.folder = state
        else:
            raise FileNotFoundError(f"the log of task {task_id!r} is in no state folder")

    def _move(self, log: _Log, task_id: str) -> None:
        """Rename the log into the folder of its state; never over another file."""
        src, dst = log.folder, log.record.state
        assert isinstance(src, TaskState)
        if src in TERMINAL or dst in TERMINAL:
            self._journal_write(task_id, dst.value)
        rename_new(self._dirs[src] + task_id + SUFFIX, self._dirs[dst] + task_id + SUFFIX)
        log.folder = dst
        if src in UNLISTED:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self._layout.moving}/{task_id}")
        if dst == TaskState.PENDING:
            self._bump_generation()

    def _record(self, log: _Log, task_id: str, event: QueueEvent) -> TaskRecord:
        """Append `event` to the (locked) log, then move it to the folder of its new state."""
        record = log.record.apply(event)
        line = encode(event)
        since = log.loaded.since_snapshot + 1
        if since >= self._snapshot_every:
            line += encode(Snapshot(record=record, at=event.at))
            since = 0
        if log.folder in UNLISTED and record.state != log.folder:
            # Nobody lists failed/ or cancelled/: announce the move where the reclaim pass
            # looks, so a crash before the rename is finished all the same.
            fd = os.open(f"{self._layout.moving}/{task_id}", os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
        data = b"\n" + line if log.loaded.torn else line
        try:
            write_all(log.fd, data, what=f"the log of task {task_id!r}")
        except Exception as exc:
            if getattr(exc, "written", 0):
                log.loaded.torn = True  # part of a line reached the file: readers skip it
            raise
        log.loaded.torn = False
        log.loaded.since_snapshot = since
        log.record = record
        if record.state != log.folder and log.folder != _ARCHIVED:
            self._move(log, task_id)
        return record

    def _locate(self, task_id: str) -> TaskRecord | None:
        """The task's record (a snapshot, read without the lock)."""
        if not is_valid_id(task_id):
            return None
        loaded = load_path(self._layout.id_link(task_id))
        return loaded.record if loaded else None

    def _bump_generation(self) -> None:
        """Tell every claimer that pending work appeared (they relist `pending/`)."""
        fd = os.open(self._layout.generation, os.O_WRONLY | os.O_APPEND)
        try:
            write_all(fd, b".", what="the queue's generation")  # its size is the generation
        finally:
            os.close(fd)

    def _generation(self) -> int:
        try:
            return os.stat(self._layout.generation).st_size
        except FileNotFoundError:
            return 0

    def _journal_write(self, task_id: str, state: str) -> None:
        if self._journal_fd < 0:
            self._journal_fd = os.open(self._layout.journal,
                                       os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        write_all(self._journal_fd, f"{task_id}\t{state}\n".encode(), what="the queue's journal")

    def _journal_read(self) -> list[tuple[str, TaskState]]:
        """Journal lines added since we last looked (the caller holds the mutex)."""
        try:
            fd = os.open(self._layout.journal, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            chunk = os.pread(fd, 1 << 24, self._journal_offset)
        finally:
            os.close(fd)
        end = chunk.rfind(b"\n") + 1
        if not end:
            return []
        self._journal_offset += end
        out = []
        for line in chunk[:end].decode().splitlines():
            task_id, _, state = line.partition("\t")
            with contextlib.suppress(ValueError):
                out.append((task_id, TaskState(state)))
        for task_id, state in out:
            self._ended[task_id] = state
        return out

    # ------------------------------------------------------------------ ingest

    def ingest(self, *, wait_s: float = 0.0) -> IngestResult:
        """Accept or reject every task file in the inbox (see `coordinator.ingest`).

        If another process is ingesting, wait up to `wait_s` for it (by default not at all:
        that process takes care of the inbox) and then return an empty result."""
        result = self._ingest.run(wait_s=wait_s)
        if result.accepted and self._on_ingest is not None:
            self._on_ingest(result)
        return result

    def _static_of(self, task_id: str) -> tuple[int, int, tuple[str, ...]]:
        """Priority rank, arrival order and dependencies: fixed for a task's life, so cached."""
        static = self._index.get(task_id)
        if static is None:
            record = self._locate(task_id)
            if record is None:
                raise UnknownTask(task_id)
            static = (record.task.priority.rank, record.seq, record.task.depends_on)
            self._index.static[task_id] = static
        return static

    # ------------------------------------------------------------------ claiming

    def claim(
        self, agent: str, *, lease_s: float, owner: Owner | None = None
    ) -> Claim | None:
        """Claim the next ready task for `agent`, or return None if none is ready.

        Order: priority (a task inherits the most urgent priority of the tasks waiting for
        it), then arrival; a task waits for its dependencies to be done and for its retry
        backoff. `owner` marks a long-lived fleet process (see `Owner`).
        """
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        self._housekeeping()
        view = self._current_view()
        now = self._clock()
        with self._mutex:
            ids, first, edits = view.ids, view.start, view.edits
        pending_dir = self._dirs[TaskState.PENDING]
        leading_gone = first
        claim = None
        not_before = self._not_before
        for i in range(first, len(ids)):
            task_id = ids[i]
            if not_before.get(task_id, 0.0) > now:
                continue
            if not os.path.exists(f"{pending_dir}{task_id}{SUFFIX}"):
                if i == leading_gone:
                    leading_gone += 1  # taken by someone: skip it from now on
                continue
            claim = self._try_claim(task_id, agent, lease_s, owner, now)
            if claim is not None:
                break
        with self._mutex:
            if self._view is view and view.edits == edits:
                view.start = max(view.start, leading_gone)
                if view.start > 4096 and view.start * 2 > len(view.ids):
                    del view.ids[: view.start]  # forget what is gone for good
                    view.start = 0
            view.claims += claim is not None
        return claim

    def _current_view(self) -> _View:
        """The view of `pending/`, relisted if new work arrived or it is worn out, and told
        what the journal says happened to the dependencies its blocked tasks wait for."""
        doomed: list[tuple[str, str]] = []
        with self._mutex:
            generation = self._generation()
            view = self._view
            if view.generation != generation or view.claims >= self._rescan_every:
                view = self._view = self._relist(generation, doomed)
            else:
                self._follow_journal(view, doomed)
        while doomed:  # tasks whose dependency can never be done: fail them, and theirs
            for task_id, reason in doomed:
                self._fail_pending(task_id, reason)
            doomed = []
            with self._mutex:
                self._follow_journal(view, doomed)
        return view

    def _relist(self, generation: int, doomed: list[tuple[str, str]]) -> _View:
        self._index.refresh()
        self._journal_read()
        ranks: dict[str, int] = {}
        deps: dict[str, tuple[str, ...]] = {}
        seqs: dict[str, int] = {}
        with os.scandir(self._dirs[TaskState.PENDING]) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(SUFFIX) and not name.startswith("."):
                    task_id = name[: -len(SUFFIX)]
                    with contextlib.suppress(UnknownTask):
                        rank, seq, task_deps = self._static_of(task_id)
                        ranks[task_id], seqs[task_id] = rank, seq
                        if task_deps:
                            deps[task_id] = task_deps
        effective = _inherited(ranks, deps)
        view = _View(generation)
        view.key = {task_id: (effective[task_id], seqs[task_id]) for task_id in ranks}
        ready = []
        for task_id in ranks:
            if self._file_if_blocked(view, task_id, deps.get(task_id, ()), doomed):
                continue
            ready.append(task_id)
        ready.sort(key=view.key.__getitem__)
        view.ids = ready
        self._not_before.clear()
        return view

    def _file_if_blocked(
        self, view: _View, task_id: str, deps: tuple[str, ...], doomed: list[tuple[str, str]]
    ) -> bool:
        """File `task_id` under the first dependency not done (or doom it if that one never
        can be); False if every dependency is done."""
        for dep in deps:
            state = self._ended.get(dep)
            if state == TaskState.DONE:
                continue
            if state in NEVER_DONE and (
                state != TaskState.REJECTED or not os.path.exists(self._layout.id_link(dep))
            ):
                doomed.append((task_id, f"dependency {dep!r} {state.value}"))
                return True
            view.blocked.setdefault(dep, []).append(task_id)
            return True
        return False

    def _follow_journal(self, view: _View, doomed: list[tuple[str, str]]) -> None:
        for task_id, state in self._journal_read():
            if state not in (TaskState.DONE, *NEVER_DONE):
                continue
            for waiter in view.blocked.pop(task_id, ()):
                if waiter not in view.key:
                    continue
                deps = self._static_of(waiter)[2]
                if not self._file_if_blocked(view, waiter, deps, doomed):
                    view.insert(waiter)

    def _fail_pending(self, task_id: str, reason: str) -> None:
        with self._opened(task_id, wait_s=0) as log:
            if log is not None and log.record.state == TaskState.PENDING:
                self._record(log, task_id, DependencyFailed(reason=reason, at=self._clock()))

    def _try_claim(
        self, task_id: str, agent: str, lease_s: float, owner: Owner | None, now: float
    ) -> Claim | None:
        with self._opened(task_id, wait_s=0) as log:
            if log is None or log.record.state != TaskState.PENDING:
                return None  # being changed right now, or taken meanwhile
            if log.record.not_before > now:
                self._not_before[task_id] = log.record.not_before
                return None
            token = log.record.token + 1
            boot_now = self._boot_clock()
            lease = Lease(
                agent=agent, token=token, claimed_at=now, expires_at=now + lease_s,
                lease_s=lease_s, boot_id=self._machine.boot_id,
                expires_boot=boot_now + lease_s, owner=owner,
            )
            record = self._record(log, task_id, Claimed(lease=lease, at=now))
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
        with self._opened(task_id) as log:
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
        self, task_id: str, token: int, *, lease_s: float | None = None,
        agent_pgid: int | None = None,
    ) -> float:
        """Renew the lease for `lease_s` more seconds (by default, the length it was claimed
        with); return its new wall-clock expiry.

        Raises `LeaseLost` if the lease was taken over or the task left `claimed`.
        """
        with self._held(task_id, token) as log:
            lease = log.record.lease
            assert lease is not None
            length = lease_s if lease_s is not None else (lease.lease_s or 60.0)
            now = self._clock()
            event = Heartbeat(token=token, expires_at=now + length,
                              expires_boot=self._boot_clock() + length,
                              agent_pgid=agent_pgid, at=now)
            self._record(log, task_id, event)
            return event.expires_at

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
            attempt = self._attempt(log.record, AttemptOutcome.SUCCEEDED, exit_code, None,
                                    log_path, started_at)
            self._record(log, task_id, Ended(attempt=attempt, to=TaskState.DONE,
                                             at=attempt.ended_at))

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
            attempt = self._attempt(log.record, AttemptOutcome(outcome), exit_code, reason,
                                    log_path, started_at)
            return self._after_failed_attempt(log, task_id, attempt, permanent=permanent).state

    def release(self, task_id: str, token: int, *, reason: str = "released") -> None:
        """Give the task back to `pending` without using up an attempt (e.g. on shutdown)."""
        with self._held(task_id, token) as log:
            attempt = self._attempt(log.record, AttemptOutcome.RELEASED, None, reason, None,
                                    None)
            self._record(log, task_id, Ended(attempt=attempt, to=TaskState.PENDING,
                                             at=attempt.ended_at))

    def _attempt(
        self,
        record: TaskRecord,
        outcome: AttemptOutcome,
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
        self, log: _Log, task_id: str, attempt: AttemptRecord, *, permanent: bool = False
    ) -> TaskRecord:
        record = log.record
        attempts = record.attempts + 1
        if permanent or attempts >= record.task.max_attempts:
            reason = attempt.reason
            if not permanent:
                why = f"{attempt.outcome} on attempt {attempts} of {record.task.max_attempts}"
                reason = f"{why}: {reason}" if reason else why
            return self._record(log, task_id, Ended(attempt=attempt, to=TaskState.FAILED,
                                                    reason=reason, at=attempt.ended_at))
        backoff = min(self._max_backoff_s, self._retry_backoff_s * 2 ** (attempts - 1))
        return self._record(log, task_id, Ended(
            attempt=attempt, to=TaskState.PENDING, not_before=attempt.ended_at + backoff,
            reason=attempt.reason, at=attempt.ended_at,
        ))

    # ------------------------------------------------------------------ recovery

    def _housekeeping(self) -> None:
        """Ingest new files and, now and then (on this process's monotonic clock, which no
        wall-clock step can stall), finish a crashed ingest or move and take back expired
        leases."""
        if self._ingest.changed() and self._ingest.inbox():
            self.ingest()
        now = self._monotonic()
        if now >= self._next_reclaim_at:
            self._next_reclaim_at = now + self._reclaim_every_s
            if self._ingest.staged():
                self.ingest()
            self.reclaim_expired()

    def reclaim_expired(self) -> list[str]:
        """Return to the queue every claimed task whose lease ran out or whose owner died,
        and finish every move announced in `.queue/moving/`.

        An expired lease uses up an attempt (the agent hung or died); a task out of attempts
        fails. The orphaned agent of a dead owner is killed so the work never runs twice.
        """
        for name in os.listdir(self._layout.moving):
            with self._opened(name, wait_s=0) as log:
                if log is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self._layout.moving}/{name}")  # the move is finished
        reclaimed = []
        with os.scandir(self._dirs[TaskState.CLAIMED]) as entries:
            ids = [e.name[: -len(SUFFIX)] for e in entries
                   if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
        for task_id in ids:
            with self._opened(task_id, wait_s=0) as log:
                if log is None or log.record.state != TaskState.CLAIMED:
                    continue  # being changed right now, finished, or a cut-short move
                why = self._lease_problem(log.record)
                if why is None:
                    continue
                lease = log.record.lease
                if lease is not None and lease.owner is not None \
                        and lease.owner.is_dead(self._machine):
                    kill_orphan(task_id, attempt=log.record.attempts + 1,
                                task_file=self._task_file(log.record), pgid=lease.agent_pgid)
                attempt = self._attempt(log.record, AttemptOutcome.LEASE_LOST, None, why, None,
                                        None)
                self._after_failed_attempt(log, task_id, attempt)
                reclaimed.append(task_id)
        return reclaimed

    def _task_file(self, record: TaskRecord) -> str:
        """The task's source file as the fleet names it to its agents (`COORDINATOR_TASK_FILE`)."""
        return str(Path(f"{self.root}/{record.source}").resolve())

    def _lease_problem(self, record: TaskRecord) -> str | None:
        lease = record.lease
        assert lease is not None  # a claimed task always has one
        if lease.expired(self._clock(), boot_now=self._boot_clock(), here=self._machine):
            return f"lease of agent {lease.agent!r} expired"
        if lease.owner is not None and lease.owner.is_dead(self._machine):
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
        """Queue a new task, its source written to `sources/` as a task file.

        Raises `TaskFileError`, writing nothing at all, if the task is invalid, its id is
        already known, or it would close a dependency cycle.
        """
        task_id = task_id or f"task-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"
        target = self.root / f"{task_id}.toml"
        try:
            task = Task(
                id=task_id, prompt=prompt, priority=priority, depends_on=depends_on, **fields
            )
        except (ValueError, TypeError) as exc:
            raise TaskFileError(target, str(exc)) from exc
        data = tasks_to_toml([task]).encode()
        [parsed] = parse_task_file(target, data=data, agents=self._ingest.agents)  # as dropped
        with self._ingest.locked(30.0):
            self._ingest.accept(target.name, data, [parsed])
        return parsed

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a pending or claimed task (a running agent loses its lease)."""
        return self._user_action(task_id, "cancel", (TaskState.PENDING, TaskState.CLAIMED),
                                 Cancelled(reason="cancelled", at=self._clock()))

    def retry(self, task_id: str) -> TaskRecord:
        """Send a failed or cancelled task back to `pending` with fresh attempts."""
        return self._user_action(task_id, "retry", UNLISTED, Retried(at=self._clock()))

    def _user_action(
        self, task_id: str, action: str, allowed: tuple[TaskState, ...], event: QueueEvent
    ) -> TaskRecord:
        """Record `event` if the task is in one of the `allowed` states; raise otherwise."""
        if not is_valid_id(task_id):
            raise UnknownTask(task_id)
        with self._opened(task_id) as log:
            if log is None:
                raise UnknownTask(task_id)
            if log.folder == _ARCHIVED:
                raise InvalidTransition(task_id, "cleared (archived)", action)
            if log.record.state not in allowed:
                raise InvalidTransition(task_id, log.record.state, action)
            return self._record(log, task_id, event)

    def clear(self, state: TaskState) -> list[str]:
        """Remove every entry in `state` (done, cancelled or rejected) from the listings.

        Nothing is deleted: logs and task files move to `archive/<state>/` (a task's log
        stays reachable by its id, which stays known). Returns the ids (or, for rejected,
        the file names) removed."""
        if state not in CLEARABLE:
            raise ValueError(f"only {', '.join(s.value for s in CLEARABLE)} can be cleared, "
                             f"not {state.value}")
        archive = self._layout.archive / state.value
        archive.mkdir(parents=True, exist_ok=True)
        cleared = []
        if state == TaskState.REJECTED:
            for entry in self.rejected():
                target = free_name(archive, entry.name)
                error = entry.path.with_name(entry.name + ".error")
                if error.exists():
                    os.rename(error, target.with_name(target.name + ".error"))
                os.rename(entry.path, target)
                cleared.append(entry.name)
            return cleared
        for record in self.records(state):
            task_id = record.task.id
            with self._opened(task_id) as log:
                if log is None or log.folder != state or log.record.state != state:
                    continue
                rename_new(self._dirs[state] + task_id + SUFFIX, f"{archive}/{task_id}{SUFFIX}")
                source = self.root / record.source
                if source.exists() and not any(
                    other.source == record.source for other in self._live_records()
                ):
                    sources = archive / "sources"
                    sources.mkdir(exist_ok=True)
                    os.rename(source, free_name(sources, source.name))
                cleared.append(task_id)
        return cleared

    def _live_records(self) -> list[TaskRecord]:
        return [r for s in RECORD_STATES for r in self.records(s)]

    # ------------------------------------------------------------------ reading

    def get(self, task_id: str) -> TaskRecord:
        """The task's current record. Raises `UnknownTask`."""
        record = self._locate(task_id)
        if record is None:
            raise UnknownTask(task_id)
        return self._with_waits(record)

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
                loaded = load_path(self._dirs[folder] + name)
                if loaded is not None and (state is None or loaded.record.state == state):
                    out.append(self._with_waits(loaded.record))
        return sorted(out, key=lambda r: (r.task.priority.rank, r.seq))

    def _with_waits(self, record: TaskRecord) -> TaskRecord:
        """The record with what a pending task still waits for filled in."""
        if record.state != TaskState.PENDING or not record.task.depends_on:
            return record
        with self._mutex:
            self._journal_read()
            ended = dict(self._ended)
        waiting = tuple(d for d in record.task.depends_on if ended.get(d) != TaskState.DONE)
        unknown = tuple(d for d in waiting if not os.path.exists(self._layout.id_link(d)))
        return replace(record, waiting_for=waiting, unknown_dependencies=unknown)

    def rejected(self) -> list[RejectedFile]:
        """Rejected task files with their reasons."""
        out = []
        for error_file in sorted(self._layout.rejected.glob("*.error")):
            path = error_file.with_name(error_file.name.removesuffix(".error"))
            if path.exists():
                reason = error_file.read_text().strip()
                out.append(RejectedFile(name=path.name, path=path, reason=reason))
        return out

    def count(self, state: TaskState) -> int:
        """How many tasks are in `state` (rejected counts files)."""
        if state == TaskState.REJECTED:
            return len(self.rejected())
        with os.scandir(self._dirs[state]) as entries:
            return sum(1 for e in entries if e.name.endswith(SUFFIX) and e.name[0] != ".")

    def counts(self) -> dict[TaskState, int]:
        """How many tasks are in each state (rejected counts files)."""
        return {state: self.count(state) for state in (*RECORD_STATES, TaskState.REJECTED)}

    def waiting(self) -> list[TaskRecord]:
        """Pending tasks that wait for a dependency no task has as its id."""
        return [r for r in self.records(TaskState.PENDING) if r.unknown_dependencies]

    def next_ready_at(self) -> float | None:
        """When the next pending task can be claimed (now or after its backoff), or None if
        no pending task can run until something else changes (all wait on dependencies).
        Costs what a claim costs: blocked tasks are not looked at."""
        self._housekeeping()
        if self._ingest.inbox() or self._ingest.staged():
            return self._clock()  # another process is ingesting new work right now
        view = self._current_view()
        with self._mutex:
            ids = view.ids[view.start:]
        pending_dir = self._dirs[TaskState.PENDING]
        earliest = None
        for task_id in ids:
            at = self._not_before.get(task_id)
            if at is None:
                loaded = load_path(f"{pending_dir}{task_id}{SUFFIX}")
                if loaded is None or loaded.record.state != TaskState.PENDING:
                    continue
                at = self._not_before[task_id] = loaded.record.not_before
            elif not os.path.exists(f"{pending_dir}{task_id}{SUFFIX}"):
                continue
            if earliest is None or at < earliest:
                earliest = at
        return earliest


def _inherited(ranks: dict[str, int], deps: dict[str, tuple[str, ...]]) -> dict[str, int]:
    if not deps:
        return ranks  # nothing waits on anything: no inheritance to compute
    from coordinator.dependencies import inherited_ranks

    return inherited_ranks(ranks, deps)


def _upgrade(layout: Layout) -> None:
    """Give a queue made before `.queue/ids/` existed its id links and journal (once)."""
    tmp = layout.internal / ".ids.upgrading"
    tmp.mkdir(exist_ok=True)
    for state in RECORD_STATES:
        for entry in os.scandir(layout.folder(state)):
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                link_new(entry.path, f"{tmp}/{entry.name}")
                if state in TERMINAL:
                    with open(layout.journal, "a") as journal:
                        journal.write(f"{entry.name[: -len(SUFFIX)]}\t{state.value}\n")
    layout.moving.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):  # another process upgraded it first
        os.rename(tmp, layout.ids)
