"""Task files in: the inbox, staging, validation against the known tasks, and rejections.

Ingest is serialised by one lock (`.queue/locks/ingest.lock`). An accepted file is first
renamed into `.queue/incoming/` (from then on it is ours, and a crash leaves it there to be
finished by the next pass), then each of its tasks is created: an index line, then its log
written to a temporary file and linked as `.queue/ids/<id>.jsonl` — the commit point, which
fails if the id was ever taken — then linked into `pending/`. Last, the file moves to
`sources/`. Known ids are the names in `.queue/ids/`: an id never leaves it, so no listing
race can make a live task look unknown (a reused id would restart its fencing token).

A file is checked whole before anything is written: it parses, none of its ids is known,
and it closes no dependency cycle with any task ever accepted (whatever its state, so a
retry can never re-form one). A rejected file moves to `rejected/` byte for byte, with
`<file>.error` naming the file, line and field; the ids it would have defined are journaled
as rejected, so tasks waiting on them fail with the reason instead of waiting forever. A
later accepted file of the same name supersedes the rejected entry (moved to `archive/`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Collection
from pathlib import Path

from filelock import FileLock, Timeout

from coordinator.dependencies import find_cycle
from coordinator.errors import TaskFileError
from coordinator.eventlog import encode, load_path
from coordinator.events import Created
from coordinator.layout import Layout, atomic_write, link_new, write_all
from coordinator.record import IngestResult, RejectedFile
from coordinator.task import Task, TaskState, field_line, parse_task_file

__all__ = ["Ingest", "TaskIndex", "check_new_tasks", "free_name"]


class TaskIndex:
    """Priority rank, arrival order and dependencies of every task ever created, read from
    `.queue/index` as it grows (they are fixed for a task's life)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.static: dict[str, tuple[int, int, tuple[str, ...]]] = {}

    def refresh(self) -> None:
        try:
            with open(self._path, "rb") as index:
                index.seek(self._offset)
                chunk = index.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        for line in chunk[:end].decode().splitlines():
            seq, rank, task_id, deps = line.split("\t")
            self.static[task_id] = (int(rank), int(seq), tuple(deps.split(",")) if deps else ())
        self._offset += end

    def get(self, task_id: str) -> tuple[int, int, tuple[str, ...]] | None:
        found = self.static.get(task_id)
        if found is None:
            self.refresh()
            found = self.static.get(task_id)
        return found


class Ingest:
    """Accepts and rejects task files for one folder queue.

    `journal(task_id, state)` records a rejected id; `bump()` tells claimers new work is
    pending; `clock` stamps the created events; `agents`, if given, are the profile names a
    task's `agent` may name (others are rejected)."""

    def __init__(
        self, layout: Layout, index: TaskIndex, *, clock: Callable[[], float],
        journal: Callable[[str, str], None], bump: Callable[[], None],
        agents: Collection[str] | None = None,
    ) -> None:
        self._layout = layout
        self._index = index
        self._clock = clock
        self._journal = journal
        self._bump = bump
        self.agents = agents
        self._inbox_seen = (0.0, 0.0)  # the inbox folder's mtime when listed, and when

    # ------------------------------------------------------------------ the lock

    def run(self, *, wait_s: float = 0.0) -> IngestResult:
        """Accept or reject every task file in the inbox (and finish a crashed pass).

        If another process is ingesting, wait up to `wait_s` for it (by default not at all:
        that process takes care of the inbox) and then return an empty result."""
        try:
            with self.locked(wait_s):
                return self._run_locked()
        except Timeout:
            return IngestResult()

    @contextlib.contextmanager
    def locked(self, wait_s: float):  # type: ignore[no-untyped-def]
        lock = FileLock(self._layout.locks / "ingest.lock", mode=0o600, poll_interval=0.001)
        lock.acquire(timeout=wait_s)
        try:
            yield
        finally:
            lock.release()

    # ------------------------------------------------------------------ the inbox

    def inbox(self) -> list[Path]:
        """Task files waiting in the inbox, oldest first."""
        root = self._layout.root
        names = [n for n in os.listdir(root) if n.endswith(".toml") and n[0] != "."]
        files = []
        for name in names:
            with contextlib.suppress(OSError):
                st = os.stat(f"{root}/{name}")
                if stat.S_ISREG(st.st_mode):
                    files.append((st.st_mtime_ns, name))
        return [root / name for _, name in sorted(files)]

    def changed(self) -> bool:
        """Whether a file may have arrived in the inbox since we last listed it.

        The folder's mtime changes when an entry is added. It is coarse (a few ms), so an
        unchanged mtime proves nothing new only if it was already older than our last look
        by more than that coarseness; otherwise list again."""
        try:
            mtime = os.stat(self._layout.root).st_mtime
        except FileNotFoundError:
            return False
        seen_mtime, listed_at = self._inbox_seen
        if mtime == seen_mtime and seen_mtime < listed_at - 0.05:
            return False
        self._inbox_seen = (mtime, time.time())
        return True

    def staged(self) -> bool:
        return bool(os.listdir(self._layout.incoming))

    def _run_locked(self) -> IngestResult:
        layout = self._layout
        staged = sorted(layout.incoming.iterdir())  # left by an ingest that crashed half-way
        inbox = self.inbox()
        if not staged and not inbox:
            return IngestResult()
        accepted: list[str] = []
        rejected: list[RejectedFile] = []
        for path in staged:
            accepted += self._create(path, parse_task_file(path))
        for path in inbox:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                tasks = parse_task_file(path, data=data, agents=self.agents)
                self.check(path, data, tasks)
            except TaskFileError as exc:
                rejected.append(self._reject(path, data, exc))
                continue
            staged_path = layout.incoming / path.name
            os.rename(path, staged_path)  # from here on the file is ours
            accepted += self._create(staged_path, tasks)
        if accepted:
            self._bump()
        return IngestResult(accepted=tuple(accepted), rejected=tuple(rejected))

    # ------------------------------------------------------------------ checks

    def check(self, path: Path, data: bytes, tasks: list[Task]) -> None:
        """Raise `TaskFileError` if a task's id is known or the file closes a cycle."""
        self._index.refresh()

        def deps_of(task_id: str) -> tuple[str, ...]:
            static = self._index.static.get(task_id)
            return static[2] if static else ()

        check_new_tasks(path, data, tasks, known_state=self.known_state, depends_on=deps_of)

    def known_state(self, task_id: str) -> str | None:
        """The state of the task with this id, if one was ever created ("known")."""
        link = self._layout.id_link(task_id)
        if not os.path.exists(link):
            return None
        loaded = load_path(link)
        return str(loaded.record.state) if loaded else "being created"

    # ------------------------------------------------------------------ writing

    def accept(self, name: str, data: bytes, tasks: list[Task]) -> list[str]:
        """Check and create `tasks` as if `data` had been dropped as `name` (the caller holds
        the lock): nothing is written unless every check passes."""
        path = self._layout.root / name
        self.check(path, data, tasks)
        staged = free_name(self._layout.incoming, name)
        atomic_write(str(staged), data)
        created = self._create(staged, tasks)
        self._bump()
        return created

    def _create(self, staged: Path, tasks: list[Task]) -> list[str]:
        layout = self._layout
        source = free_name(layout.sources, staged.name)
        seq = _read_int(layout.seq)
        created: list[str] = []
        events = []
        for task in tasks:
            seq += 1
            events.append(Created(task=task, seq=seq, source=f"sources/{source.name}",
                                  at=self._clock()))
        # The index first: a task the index misses is still found (by reading its log).
        with open(layout.index, "ab") as index:
            index.write("".join(
                f"{e.seq}\t{e.task.priority.rank}\t{e.task.id}\t{','.join(e.task.depends_on)}\n"
                for e in events
            ).encode())
        for event in events:
            task_id = event.task.id
            link = layout.id_link(task_id)
            tmp = f"{layout.ids}/.{task_id}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, encode(event), what=f"the log of task {task_id!r}")
            finally:
                os.close(fd)
            try:
                if link_new(tmp, link):  # the commit point: the id is taken
                    created.append(task_id)
                # else: created before a crash; make sure it is in a folder (below)
            finally:
                os.unlink(tmp)
            if os.stat(link).st_nlink == 1 and link_new(  # the create was cut short
                link, layout.log(TaskState.PENDING, task_id)
            ) and task_id not in created:
                created.append(task_id)
        atomic_write(str(layout.seq), str(seq).encode())
        os.rename(staged, source)
        self._supersede(staged.name)
        return created

    def _reject(self, path: Path, data: bytes, error: TaskFileError) -> RejectedFile:
        target = free_name(self._layout.rejected, path.name)
        reason = str(error).replace(str(path), path.name, 1)
        atomic_write(str(target) + ".error", (reason + "\n").encode())
        os.rename(path, target)  # moved aside, never rewritten
        for task_id in defined_ids(path, data):
            if self.known_state(task_id) is None:
                self._journal(task_id, TaskState.REJECTED.value)
        return RejectedFile(name=target.name, path=target, reason=reason)

    def _supersede(self, name: str) -> None:
        """Move a rejected entry of the same file name to `archive/rejected/`: the file that
        replaced it was accepted."""
        rejected = self._layout.rejected / name
        if not rejected.exists():
            return
        archive = self._layout.archive / TaskState.REJECTED.value
        archive.mkdir(parents=True, exist_ok=True)
        error = rejected.with_name(rejected.name + ".error")
        target = free_name(archive, name)
        if error.exists():
            os.rename(error, target.with_name(target.name + ".error"))
        os.rename(rejected, target)


def check_new_tasks(
    path: Path,
    data: bytes,
    tasks: list[Task],
    *,
    known_state: Callable[[str], str | None],
    depends_on: Callable[[str], tuple[str, ...]],
) -> None:
    """Raise `TaskFileError`, naming the line and field, if one of the file's `tasks` has an
    id already known (`known_state` gives its state, None for an unknown id) or the file
    would close a dependency cycle with the known tasks (`depends_on` of a known id)."""
    for index, task in enumerate(tasks):
        state = known_state(task.id)
        if state is not None:
            raise TaskFileError(
                path,
                f"task id {task.id!r} is already known (it is {state}); "
                "give the new task another id",
                line=field_line(data, "id", index),
                field="id",
            )
    new = {task.id: task.depends_on for task in tasks}
    cycle = find_cycle(new, lambda task_id: new[task_id] if task_id in new else depends_on(task_id))
    if cycle is not None:
        index = next(i for i, t in enumerate(tasks) if t.id in cycle)
        raise TaskFileError(
            path, f"dependency cycle: {' -> '.join(cycle)}",
            line=field_line(data, "depends_on", index), field="depends_on",
        )


def defined_ids(path: Path, data: bytes) -> list[str]:
    """The ids a rejected file meant to define: its tasks' ids if it parses, else (a file
    without [[tasks]] tables) the id its name gives."""
    try:
        return [task.id for task in parse_task_file(path, data=data)]
    except TaskFileError:
        pass
    from coordinator.task import is_valid_id

    if b"[[tasks]]" not in data and is_valid_id(path.stem):
        return [path.stem]
    return []


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except FileNotFoundError:
        return 0


def free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem.N.suffix` if that is taken: nothing is overwritten."""
    candidate = folder / name
    n = 1
    while candidate.exists() or candidate.with_name(candidate.name + ".error").exists():
        stem, dot, suffix = name.rpartition(".")
        candidate = folder / (f"{stem}.{n}.{suffix}" if dot else f"{name}.{n}")
        n += 1
    return candidate
