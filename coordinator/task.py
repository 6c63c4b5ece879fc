"""Tasks: the value object, its priority and state, and parsing + validating task files.

A task file is TOML holding one task as top-level keys, or several as `[[tasks]]` tables.
Parsing is all-or-nothing per file: any problem rejects the whole file with a `TaskFileError`
that names the file, the line and the field.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any

from coordinator.errors import TaskFileError
from orchestrator.request import Priority  # one priority vocabulary: claim order = serve order


class TaskState(StrEnum):
    """Where a task is in its life; each state is a folder of the queue."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
"""Letters, digits, `.`, `_`, `-`; at most 64; not starting with `.` (no `..`, no hidden files)."""

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One unit of work for an agent, exactly as its file describes it."""

    id: str
    prompt: str
    title: str = ""
    priority: Priority = Priority.NORMAL
    depends_on: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    agent: str | None = None
    acceptance: tuple[str, ...] = ()
    created_by: str | None = None
    workdir: str | None = None
    gate: bool = False

    def __post_init__(self) -> None:
        if not is_valid_id(self.id):
            raise ValueError(f"id must match {ID_PATTERN.pattern}, got {self.id!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {self.timeout_s}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        fields = dict(data)
        fields["priority"] = Priority(fields["priority"])
        for name in ("depends_on", "tags", "acceptance"):
            fields[name] = tuple(fields[name])
        return cls(**fields)


def workdir_escape(workdir: str) -> str | None:
    """Why `workdir` would lead out of the fleet's working directory, or None if it stays in."""
    path = PurePath(workdir)
    if path.is_absolute():
        return f"must be relative to the fleet's --workdir, got the absolute path {workdir!r}"
    if ".." in path.parts:
        return f"must stay inside the fleet's --workdir, got {workdir!r} (it goes up with '..')"
    return None


def is_valid_id(task_id: str) -> bool:
    """True if `task_id` is safe to use as a file name and follows the id rules."""
    return isinstance(task_id, str) and ID_PATTERN.fullmatch(task_id) is not None


# field name -> (accepted python types, description of what is expected)
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str,), "a string of letters, digits, '.', '_', '-' (at most 64)"),
    "prompt": ((str,), "a non-empty string"),
    "title": ((str,), "a string"),
    "priority": ((str,), "one of " + ", ".join(repr(p.value) for p in Priority)),
    "depends_on": ((list,), "a list of task ids"),
    "tags": ((list,), "a list of strings"),
    "max_attempts": ((int,), "a whole number >= 1"),
    "timeout_s": ((int, float), "a number of seconds > 0"),
    "agent": ((str,), "the name of an agent profile"),
    "acceptance": ((list,), "a list of shell commands"),
    "created_by": ((str,), "a string"),
    "workdir": ((str,), "a directory path"),
    "gate": ((bool,), "true or false (run the attempt in a git worktree behind the gate)"),
}


def parse_task_file(
    path: Path, *, data: bytes | None = None, agents: Collection[str] | None = None,
) -> list[Task]:
    """Parse and validate one task file; raise `TaskFileError` naming every problem, where.

    `agents`, if given, are the profile names a task's `agent` may name (the fleet's
    configured and built-in profiles)."""
    raw = path.read_bytes() if data is None else data
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _line_from_toml_error(str(exc), text)
        raise TaskFileError(path, f"TOML syntax error: {exc}", line=line) from exc
    locator = _Locator(text)
    if "tasks" in doc:
        extra = sorted(set(doc) - {"tasks"})
        if extra:
            raise TaskFileError(
                path,
                "a file with [[tasks]] tables takes no top-level task keys "
                f"(found {', '.join(extra)})",
                line=locator.line_of(extra[0], table=None),
                field=extra[0],
            )
        tables = doc["tasks"]
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise TaskFileError(
                path, "expected [[tasks]] tables", line=locator.line_of("tasks"), field="tasks"
            )
        if not tables:
            raise TaskFileError(path, "the file defines no tasks", field="tasks")
        indexed: list[tuple[Mapping[str, Any], int | None, str | None]] = [
            (table, i, None) for i, table in enumerate(tables)
        ]
    else:
        indexed = [(doc, None, path.stem)]
    tasks: list[Task] = []
    problems: list[TaskFileError] = []
    for table, index, default_id in indexed:
        try:
            tasks.append(_task_from_table(path, table, locator, index=index,
                                          default_id=default_id, agents=agents))
        except TaskFileError as exc:
            problems.append(exc)
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if task.id in seen:
            problems.append(TaskFileError(
                path,
                f"duplicate id {task.id!r} within the file",
                line=locator.line_of("id", table=i),
                field="id",
            ))
        seen.add(task.id)
    if problems:
        raise TaskFileError.of(problems)
    return tasks


def _task_from_table(
    path: Path, table: Mapping[str, Any], locator: _Locator, *, index: int | None,
    default_id: str | None, agents: Collection[str] | None = None,
) -> Task:
    """The task `table` describes; raises one `TaskFileError` listing every bad field."""
    problems: list[TaskFileError] = []
    bad: set[str] = set()  # fields already reported: their later checks would only repeat

    def error(field: str, message: str) -> None:
        where = f"[[tasks]] #{index + 1}: " if index is not None else ""
        problems.append(TaskFileError(
            path, where + message, line=locator.line_of(field, table=index), field=field
        ))
        bad.add(field)

    for key in table:
        if key not in _FIELDS:
            error(key, f"unknown key {key!r}; known keys are: {', '.join(_FIELDS)}")
    for key, value in table.items():
        if key in bad:
            continue
        types, expected = _FIELDS[key]
        if isinstance(value, bool) is not (bool in types) or not isinstance(value, types):
            error(key, f"expected {expected}, got {_describe(value)}")
    for key in ("depends_on", "tags", "acceptance"):
        if key in bad:
            continue
        for item in table.get(key, []):
            if not isinstance(item, str):
                error(key, f"expected {_FIELDS[key][1]}, got an item {_describe(item)}")
                break
    if "prompt" not in table:
        error("prompt", "missing required key 'prompt' (a non-empty string)")
    elif "prompt" not in bad and not table["prompt"].strip():
        error("prompt", "expected a non-empty string, got an empty one")
    if "id" not in table and default_id is None:
        error("id", "each [[tasks]] table needs an 'id'")
    task_id = table.get("id", default_id)
    if "id" not in bad and not is_valid_id(task_id):
        error("id", f"expected {_FIELDS['id'][1]}, not starting with '.', got {task_id!r}")
    priority = Priority.NORMAL
    if "priority" not in bad:
        try:
            priority = Priority(table.get("priority", Priority.NORMAL))
        except ValueError:
            error("priority", f"expected {_FIELDS['priority'][1]}, got {table['priority']!r}")
    if "depends_on" not in bad:
        for dep in table.get("depends_on", []):
            if not is_valid_id(dep):
                error("depends_on", f"{dep!r} is not a valid task id")
            elif dep == task_id:
                error("depends_on", f"task {task_id!r} depends on itself")
    if "max_attempts" not in bad and table.get("max_attempts", 1) < 1:
        error("max_attempts", f"expected {_FIELDS['max_attempts'][1]}, got "
              f"{table['max_attempts']}")
    if "timeout_s" not in bad and not (
            math.isfinite(table.get("timeout_s", 1)) and table.get("timeout_s", 1) > 0):
        error("timeout_s", f"expected {_FIELDS['timeout_s'][1]}, got {table['timeout_s']}")
    escape = workdir_escape(table["workdir"]) if "workdir" in table and "workdir" not in bad \
        else None
    if escape is not None:
        error("workdir", f"workdir {escape}")
    if agents is not None and "agent" in table and "agent" not in bad \
            and table["agent"] not in agents:
        error("agent", f"unknown agent profile {table['agent']!r}; known profiles are: "
              f"{', '.join(sorted(agents))} (define others as [profiles.NAME] in coordinator.toml)")
    if problems:
        raise TaskFileError.of(problems)
    return Task(
        id=task_id,
        prompt=table["prompt"],
        title=table.get("title", ""),
        priority=priority,
        depends_on=tuple(table.get("depends_on", ())),
        tags=tuple(table.get("tags", ())),
        max_attempts=table.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
        timeout_s=float(table.get("timeout_s", DEFAULT_TIMEOUT_S)),
        agent=table.get("agent"),
        acceptance=tuple(table.get("acceptance", ())),
        created_by=table.get("created_by"),
        workdir=table.get("workdir"),
        gate=table.get("gate", False),
    )


def field_line(data: bytes, field: str, index: int) -> int | None:
    """The line of `field` in task number `index` (0-based) of a task file, if written there."""
    text = data.decode("utf-8", errors="replace")
    locator = _Locator(text)
    multi = any(_Locator._TABLE.match(line) for line in text.splitlines())
    return locator.line_of(field, table=index if multi else None)


def _describe(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r:.40})"


def _line_from_toml_error(message: str, text: str) -> int | None:
    match = re.search(r"at line (\d+)", message)
    if match:
        return int(match.group(1))
    if "end of document" in message:
        return max(1, len(text.splitlines()))
    return None


class _Locator:
    """Finds the line of a key in TOML text (tomllib keeps no positions)."""

    _TABLE = re.compile(r"^\s*\[\[\s*tasks\s*\]\]")
    _ANY_TABLE = re.compile(r"^\s*\[")

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()

    def line_of(self, key: str, table: int | None = None) -> int | None:
        """1-based line of `key = …` in [[tasks]] table number `table` (None: top level)."""
        key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        current: int | None = None
        seen_tables = -1
        for number, line in enumerate(self._lines, start=1):
            if self._TABLE.match(line):
                seen_tables += 1
                current = seen_tables
                if table == current and key == "tasks":
                    return number
                continue
            if self._ANY_TABLE.match(line):
                current = -1  # some other table: not ours
                continue
            if current == table and key_re.match(line):
                return number
        if table is not None:
            return self._table_header_line(table)
        return None

    def _table_header_line(self, table: int) -> int | None:
        seen = -1
        for number, line in enumerate(self._lines, start=1):
            if self._TABLE.match(line):
                seen += 1
                if seen == table:
                    return number
        return None


def tasks_to_toml(tasks: Sequence[Task]) -> str:
    """Render tasks as a task file (used by `coordinator tasks add`)."""
    out: list[str] = []
    for task in tasks:
        out.append("[[tasks]]")
        for key, value in task.to_json().items():
            if value in (None, "", ()) or (key == "priority" and value == Priority.NORMAL):
                continue
            if key == "gate" and value is False:
                continue
            if key == "max_attempts" and value == DEFAULT_MAX_ATTEMPTS:
                continue
            if key == "timeout_s" and value == DEFAULT_TIMEOUT_S:
                continue
            out.append(f"{key} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        # A JSON string is a TOML basic string, given raw non-ASCII (TOML has no surrogate
        # escapes) and DEL escaped (TOML forbids it raw).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
