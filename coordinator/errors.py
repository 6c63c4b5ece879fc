"""The coordinator's error tree.

    CoordinatorError
    ├── TaskFileError        (ValueError) a task file is malformed; names file, line and field
    ├── UnknownTask          (LookupError) no task with that id
    ├── InvalidTransition    (ValueError) the task is not in a state that allows the action
    ├── LeaseLost            (PermissionError) the caller's lease expired or was taken over
    ├── LockTimeout          (TimeoutError) a task's lock stayed busy too long
    ├── QueueNotFound        (FileNotFoundError) the folder is not a task queue
    ├── QueueUnreachable     (ConnectionError) the queue's Redis did not answer
    ├── QueueWriteError      (OSError) a write to the queue failed (disk full); nothing moved
    └── ConfigError          (ValueError) coordinator.toml or a flag is malformed
"""

from __future__ import annotations

from pathlib import Path


class CoordinatorError(Exception):
    """Root of every error the coordinator raises on purpose."""


class TaskFileError(CoordinatorError, ValueError):
    """A task file was rejected: it names the file, and the line and field where known.

    `problems` holds every problem found in the file, this one first (`path`, `line`,
    `field` and `message` are the first's); the text lists them all, one a line."""

    def __init__(
        self, path: Path | str, message: str, *, line: int | None = None,
        field: str | None = None, more: tuple[TaskFileError, ...] = (),
    ) -> None:
        self.path, self.line, self.field, self.message = Path(path), line, field, message
        where = str(path) + (f":{line}" if line is not None else "")
        what = f"field {field!r}: " if field else ""
        self.problems: tuple[TaskFileError, ...] = (self, *more)
        super().__init__("\n".join([f"{where}: {what}{message}", *(str(p) for p in more)]))

    @classmethod
    def of(cls, problems: list[TaskFileError]) -> TaskFileError:
        """One error reporting all of `problems` (at least one), in their order."""
        first, *rest = [p for found in problems for p in found.problems]
        return cls(first.path, first.message, line=first.line, field=first.field,
                   more=tuple(rest))


class UnknownTask(CoordinatorError, LookupError):
    """No task with this id is known to the queue."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {task_id!r}")


class InvalidTransition(CoordinatorError, ValueError):
    """The task's current state does not allow the requested action."""

    def __init__(self, task_id: str, state: str, action: str) -> None:
        self.task_id, self.state, self.action = task_id, state, action
        super().__init__(f"cannot {action} task {task_id!r}: it is {state}")


class LeaseLost(CoordinatorError, PermissionError):
    """The caller no longer holds the task's lease (expired, taken over, or wrong token)."""

    def __init__(self, task_id: str, token: int, reason: str) -> None:
        self.task_id, self.token, self.reason = task_id, token, reason
        super().__init__(f"lease on task {task_id!r} with token {token} is lost: {reason}")


class LockTimeout(CoordinatorError, TimeoutError):
    """A task's lock stayed held by someone else for longer than the caller would wait."""

    def __init__(self, task_id: str, timeout_s: float) -> None:
        self.task_id, self.timeout_s = task_id, timeout_s
        super().__init__(f"task {task_id!r} stayed locked for more than {timeout_s:g}s")


class QueueUnreachable(CoordinatorError, ConnectionError):
    """The Redis a `RedisQueue` lives in did not answer; `where` names it (host, port and
    database, never a password)."""

    def __init__(self, where: str, error: BaseException) -> None:
        self.where = where
        super().__init__(f"the task queue in Redis at {where} did not answer: {error}")


class ConfigError(CoordinatorError, ValueError):
    """A setting is malformed; names where it came from."""


class QueueNotFound(CoordinatorError, FileNotFoundError):
    """The folder does not hold a task queue (and the caller did not ask to create one)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: not a task queue (no such folder, or it was not made by "
                         "`coordinator run` or `coordinator tasks add`)")

    def __str__(self) -> str:
        return str(self.args[0])


class QueueWriteError(CoordinatorError, OSError):
    """A write to the queue failed (e.g. the disk is full) before the change took effect.

    `what` names the file, `written` how many bytes of the failed write reached it (a torn
    line, which readers skip)."""

    def __init__(self, what: str, reason: str, *, written: int = 0) -> None:
        self.what, self.reason, self.written = what, reason, written
        super().__init__(f"could not write {what}: {reason}; nothing was changed")

    def __str__(self) -> str:
        return str(self.args[0])
