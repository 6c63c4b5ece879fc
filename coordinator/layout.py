"""The folder queue's files: where each one lives, and the three ways anything is written.

    *.toml                  the inbox: drop task files here (write them elsewhere, then rename)
    pending/<id>.jsonl      each task's event log, in the folder of its state
    claimed/ done/ failed/ cancelled/
    rejected/<file>         a rejected task file, byte for byte, with <file>.error beside it
    sources/<file>          an accepted task file, byte for byte
    archive/<state>/        entries removed by `tasks clear` or superseded, never deleted
    logs/<id>/attempt-N.log
    .queue/ids/<id>.jsonl   a second hard link to every task's log, made when the task is
                            created and never removed: the store of known ids (creating a link
                            fails if the name exists, so an id can be taken only once) and a
                            path to the log that does not move
    .queue/journal          `<id>\\t<state>` whenever a task enters or leaves done/failed/
                            cancelled, or an id is rejected: how claimers learn, without
                            looking, that what a blocked task waits for has happened
    .queue/moving/<id>      a move out of failed/ or cancelled/ (which nobody scans) under way
    .queue/index            seq, rank, id, dependencies of every task, in arrival order
    .queue/generation       grows by a byte whenever pending work appears
    .queue/incoming/ locks/ seq

Writes: an append (`write_all`: the whole line, or an error before anything moves), a
create that never replaces (`link_new`), and a rename that never replaces
(`rename_new`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import QueueWriteError
from coordinator.task import TaskState

__all__ = ["RECORD_STATES", "SUFFIX", "Layout", "atomic_write", "link_new", "rename_new",
           "write_all"]

RECORD_STATES = (
    TaskState.PENDING,
    TaskState.CLAIMED,
    TaskState.DONE,
    TaskState.FAILED,
    TaskState.CANCELLED,
)
SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class Layout:
    """Every path of one queue. State folders are kept as plain string prefixes: the claim
    path builds thousands of paths a second."""

    root: Path

    @property
    def internal(self) -> Path:
        return self.root / ".queue"

    @property
    def ids(self) -> Path:
        return self.internal / "ids"

    @property
    def moving(self) -> Path:
        return self.internal / "moving"

    @property
    def incoming(self) -> Path:
        return self.internal / "incoming"

    @property
    def locks(self) -> Path:
        return self.internal / "locks"

    @property
    def journal(self) -> str:
        return str(self.internal / "journal")

    @property
    def index(self) -> Path:
        return self.internal / "index"

    @property
    def generation(self) -> str:
        return str(self.internal / "generation")

    @property
    def seq(self) -> Path:
        return self.internal / "seq"

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def rejected(self) -> Path:
        return self.root / TaskState.REJECTED.value

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def folder(self, state: TaskState) -> str:
        return f"{self.root}/{state.value}/"

    def log(self, state: TaskState, task_id: str) -> str:
        return f"{self.root}/{state.value}/{task_id}{SUFFIX}"

    def id_link(self, task_id: str) -> str:
        return f"{self.root}/.queue/ids/{task_id}{SUFFIX}"

    def is_queue(self) -> bool:
        return self.internal.is_dir() and all(
            (self.root / state.value).is_dir() for state in RECORD_STATES
        )

    def create(self) -> None:
        for state in (*RECORD_STATES, TaskState.REJECTED):
            (self.root / state.value).mkdir(parents=True, exist_ok=True)
        for folder in (self.sources, self.root / "logs", self.locks, self.incoming, self.ids,
                       self.moving):
            folder.mkdir(parents=True, exist_ok=True)
        for path in (self.generation, self.journal):
            with open(path, "ab"):
                pass


def write_all(fd: int, data: bytes, *, what: str) -> int:
    """Write all of `data` to `fd` (opened O_APPEND), looping over short writes.

    Returns how many bytes reached the file. Raises `QueueWriteError` (naming `what`) if the
    disk is full or the write fails; `QueueWriteError.written` says how much of `data` did
    reach the file (a torn line, which readers skip)."""
    view = memoryview(data)
    written = 0
    while written < len(data):
        try:
            n = os.write(fd, view[written:])
        except OSError as exc:
            raise QueueWriteError(what, exc.strerror or str(exc), written=written) from exc
        if n == 0:
            raise QueueWriteError(what, "the write made no progress", written=written)
        written += n
    return written


def atomic_write(path: str, data: bytes) -> None:
    """Write-then-rename: readers see the old content or the new, never half of either."""
    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise QueueWriteError(path, exc.strerror or str(exc)) from exc
    os.rename(tmp, path)


def link_new(src: str, dst: str) -> bool:
    """Give the file at `src` the new name `dst`; False (and nothing changed) if `dst`
    exists. A hard link is the one file-creating call that never replaces."""
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    return True


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_new(src: str, dst: str) -> None:
    """Rename `src` to `dst`, atomically, refusing (FileExistsError) if `dst` exists:
    `renameat2(RENAME_NOREPLACE)` on Linux, link-then-unlink elsewhere."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, src.encode(), _AT_FDCWD, dst.encode(), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the filesystem cannot
            raise OSError(code, os.strerror(code), src, None, dst)
    os.link(src, dst)  # FileExistsError if taken
    os.unlink(src)
