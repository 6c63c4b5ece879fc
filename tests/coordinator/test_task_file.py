"""Task files: one task or `[[tasks]]`, every field and default, and what gets rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.errors import TaskFileError
from coordinator.task import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    Priority,
    Task,
    is_valid_id,
    parse_task_file,
    tasks_to_toml,
)


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _rejection(folder: Path, name: str, text: str | bytes) -> TaskFileError:
    path = _write(folder, name, text)
    with pytest.raises(TaskFileError) as info:
        parse_task_file(path)
    assert info.value.path == path
    assert name in str(info.value)
    return info.value


# ---------------------------------------------------------------- accepted files


def test_one_task_file_takes_its_id_from_the_file_stem(tmp_path: Path) -> None:
    """A one-task file without `id` is named after its file."""
    [task] = parse_task_file(_write(tmp_path, "fix-login.toml", 'prompt = "fix it"\n'))
    assert task.id == "fix-login"
    assert task.prompt == "fix it"


def test_one_task_file_defaults_every_optional_field(tmp_path: Path) -> None:
    """Only `prompt` is required; the rest take the documented defaults."""
    [task] = parse_task_file(_write(tmp_path, "t.toml", 'prompt = "p"\n'))
    assert task == Task(id="t", prompt="p")
    assert task.title == ""
    assert task.priority is Priority.NORMAL
    assert task.depends_on == ()
    assert task.tags == ()
    assert task.max_attempts == DEFAULT_MAX_ATTEMPTS == 3
    assert task.timeout_s == DEFAULT_TIMEOUT_S == 600.0
    assert task.agent is None
    assert task.acceptance == ()
    assert task.created_by is None


def test_one_task_file_reads_every_field(tmp_path: Path) -> None:
    """Every documented field is read into the task as written."""
    text = """
id = "build-api"
prompt = "Build the API"
title = "API"
priority = "high"
depends_on = ["schema", "auth"]
tags = ["backend", "v2"]
max_attempts = 5
timeout_s = 90.5
agent = "claude"
acceptance = ["pytest -q", "ruff check ."]
created_by = "lead"
workdir = "services/api"
"""
    [task] = parse_task_file(_write(tmp_path, "whatever.toml", text))
    assert task == Task(
        id="build-api",
        prompt="Build the API",
        title="API",
        priority=Priority.HIGH,
        depends_on=("schema", "auth"),
        tags=("backend", "v2"),
        max_attempts=5,
        timeout_s=90.5,
        agent="claude",
        acceptance=("pytest -q", "ruff check ."),
        created_by="lead",
        workdir="services/api",
    )


def test_explicit_id_overrides_the_file_stem(tmp_path: Path) -> None:
    """`id = …` wins over the file name."""
    [task] = parse_task_file(_write(tmp_path, "file-name.toml", 'id = "real"\nprompt = "p"\n'))
    assert task.id == "real"


def test_integer_timeout_is_read_as_seconds(tmp_path: Path) -> None:
    """`timeout_s` accepts a whole number and keeps it as float seconds."""
    [task] = parse_task_file(_write(tmp_path, "t.toml", 'prompt = "p"\ntimeout_s = 30\n'))
    assert task.timeout_s == 30.0
    assert isinstance(task.timeout_s, float)


@pytest.mark.parametrize("priority", list(Priority))
def test_every_priority_name_is_accepted(tmp_path: Path, priority: Priority) -> None:
    """`critical`, `high`, `normal` and `low` are the priority names."""
    text = f'prompt = "p"\npriority = "{priority.value}"\n'
    [task] = parse_task_file(_write(tmp_path, "t.toml", text))
    assert task.priority is priority


def test_priorities_rank_critical_first_and_low_last() -> None:
    """Claim order is critical, high, normal, low."""
    ranked = sorted(Priority, key=lambda p: p.rank)
    assert ranked == [Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW]


def test_tasks_tables_define_several_tasks_in_file_order(tmp_path: Path) -> None:
    """A `[[tasks]]` file yields one task per table, in order, each with its own fields."""
    text = """
[[tasks]]
id = "a"
prompt = "first"
priority = "low"

[[tasks]]
id = "b"
prompt = "second"
depends_on = ["a"]
max_attempts = 1
"""
    tasks = parse_task_file(_write(tmp_path, "batch.toml", text))
    assert tasks == [
        Task(id="a", prompt="first", priority=Priority.LOW),
        Task(id="b", prompt="second", depends_on=("a",), max_attempts=1),
    ]


def test_longest_allowed_id_is_64_characters(tmp_path: Path) -> None:
    """An id of exactly 64 allowed characters is accepted."""
    task_id = "a" * 62 + ".-"
    [task] = parse_task_file(_write(tmp_path, "t.toml", f'id = "{task_id}"\nprompt = "p"\n'))
    assert task.id == task_id


def test_task_file_rendering_round_trips_every_field(tmp_path: Path) -> None:
    """`tasks_to_toml` (used by `tasks add`) writes a file that parses back to the same task."""
    task = Task(
        id="t1", prompt='say "hi"\n\tand \\ leave', title="T", priority=Priority.CRITICAL,
        depends_on=("x",), tags=("a", "b"), max_attempts=7, timeout_s=1.5, agent="echo",
        acceptance=("true",), created_by="me", workdir="sub/dir",
    )
    path = _write(tmp_path, "t1.toml", tasks_to_toml([task]))
    assert parse_task_file(path) == [task]


def test_task_file_rendering_round_trips_characters_beyond_the_bmp(tmp_path: Path) -> None:
    """A prompt with an emoji survives `tasks_to_toml` and parses back unchanged."""
    task = Task(id="t1", prompt="ship it 🚀 — naïve café")
    path = _write(tmp_path, "t1.toml", tasks_to_toml([task]))
    assert parse_task_file(path) == [task]


# ---------------------------------------------------------------- the rejection corpus


def test_unknown_key_is_rejected_naming_line_and_key(tmp_path: Path) -> None:
    """An unknown key names its line and lists the known keys."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\ncolour = "red"\n')
    assert (error.line, error.field) == (2, "colour")
    assert "unknown key 'colour'" in str(error)
    assert "prompt" in error.message  # the known keys are listed


_WRONG_TYPES = {
    "id": ("5", "string"),
    "prompt": ("5", "non-empty string"),
    "title": ("[1]", "string"),
    "priority": ("1", "one of 'critical'"),
    "depends_on": ('"a"', "list of task ids"),
    "tags": ('"a"', "list of strings"),
    "max_attempts": ('"3"', "whole number"),
    "timeout_s": ('"10"', "number of seconds"),
    "agent": ("1", "the name of an agent profile"),
    "acceptance": ('"make test"', "list of shell commands"),
    "created_by": ("{ name = 'x' }", "string"),
    "workdir": ("7", "directory path"),
}


@pytest.mark.parametrize("field", sorted(_WRONG_TYPES))
def test_wrong_type_is_rejected_for_every_field(tmp_path: Path, field: str) -> None:
    """A value of the wrong type names the field, its line and what was expected."""
    value, expected = _WRONG_TYPES[field]
    lines = ['title = "t"'] if field != "title" else []
    if field != "prompt":
        lines.append('prompt = "p"')
    lines.append(f"{field} = {value}")
    error = _rejection(tmp_path, "t.toml", "\n".join(lines) + "\n")
    assert (error.line, error.field) == (len(lines), field)
    assert f"t.toml:{len(lines)}: field '{field}'" in str(error)
    assert f"expected a {expected}" in error.message or f"expected {expected}" in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("tags", "[1]"), ("depends_on", "[2]"), ("acceptance", "[true]"), ("tags", '["a", [1]]')],
)
def test_list_with_an_item_of_the_wrong_type_is_rejected(
    tmp_path: Path, field: str, value: str
) -> None:
    """Every item of a list field must be a string."""
    error = _rejection(tmp_path, "t.toml", f'prompt = "p"\n{field} = {value}\n')
    assert (error.line, error.field) == (2, field)
    assert "expected" in error.message


@pytest.mark.parametrize(
    ("field", "value"), [("max_attempts", "true"), ("timeout_s", "false"), ("title", "true")]
)
def test_boolean_is_not_taken_for_a_number_or_string(
    tmp_path: Path, field: str, value: str
) -> None:
    """`true`/`false` are rejected where a number (or anything else) is expected."""
    error = _rejection(tmp_path, "t.toml", f'prompt = "p"\n{field} = {value}\n')
    assert (error.line, error.field) == (2, field)
    assert "got a boolean" in error.message


def test_fractional_max_attempts_is_rejected(tmp_path: Path) -> None:
    """`max_attempts` must be a whole number."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\nmax_attempts = 2.5\n')
    assert (error.line, error.field) == (2, "max_attempts")


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_attempts", "0"), ("max_attempts", "-1"), ("timeout_s", "0"), ("timeout_s", "-2.5")],
)
def test_out_of_range_numbers_are_rejected(tmp_path: Path, field: str, value: str) -> None:
    """At least one attempt, and a timeout above zero."""
    error = _rejection(tmp_path, "t.toml", f'prompt = "p"\n{field} = {value}\n')
    assert (error.line, error.field) == (2, field)
    assert "expected" in error.message


def test_nan_timeout_is_rejected(tmp_path: Path) -> None:
    """`timeout_s = nan` is not a number of seconds > 0."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\ntimeout_s = nan\n')
    assert (error.line, error.field) == (2, "timeout_s")


def test_missing_prompt_is_rejected(tmp_path: Path) -> None:
    """A task without `prompt` is rejected naming the field."""
    error = _rejection(tmp_path, "t.toml", 'title = "no prompt"\n')
    assert error.field == "prompt"
    assert "missing required key 'prompt'" in error.message


def test_empty_file_is_rejected_for_its_missing_prompt(tmp_path: Path) -> None:
    """An empty file is a task without a prompt."""
    error = _rejection(tmp_path, "t.toml", "")
    assert error.field == "prompt"


def test_missing_prompt_in_a_tasks_table_names_the_table_line(tmp_path: Path) -> None:
    """Inside `[[tasks]]`, a missing key points at the table's header."""
    text = '[[tasks]]\nid = "a"\nprompt = "p"\n\n[[tasks]]\nid = "b"\n'
    error = _rejection(tmp_path, "t.toml", text)
    assert (error.line, error.field) == (5, "prompt")
    assert "#2" in error.message


@pytest.mark.parametrize("prompt", ['""', '"   \\n\\t"', "'''\n\n'''"])
def test_empty_prompt_is_rejected(tmp_path: Path, prompt: str) -> None:
    """A prompt of only whitespace is as good as none."""
    error = _rejection(tmp_path, "t.toml", f'title = "t"\nprompt = {prompt}\n')
    assert (error.line, error.field) == (2, "prompt")
    assert "non-empty" in error.message


@pytest.mark.parametrize("priority", ["urgent", "High", ""])
def test_unknown_priority_is_rejected(tmp_path: Path, priority: str) -> None:
    """Only the four priority names (lower case) are accepted."""
    error = _rejection(tmp_path, "t.toml", f'prompt = "p"\npriority = "{priority}"\n')
    assert (error.line, error.field) == (2, "priority")
    assert "'critical', 'high', 'normal', 'low'" in error.message


def test_toml_syntax_error_is_rejected_with_its_line(tmp_path: Path) -> None:
    """The line of a syntax error comes from tomllib."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\n\ntitle = = "t"\n')
    assert error.line == 3
    assert "TOML syntax error" in error.message
    assert "t.toml:3:" in str(error)


def test_duplicate_toml_key_is_a_syntax_error(tmp_path: Path) -> None:
    """A key given twice is refused by TOML itself, on the second line."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\nprompt = "q"\n')
    assert error.line == 2


def test_syntax_error_at_end_of_document_still_names_a_line(tmp_path: Path) -> None:
    """An unterminated string at the end of the file is reported at the last line."""
    error = _rejection(tmp_path, "t.toml", 'title = "t"\nprompt = "never closed')
    assert error.line == 2


def test_duplicate_ids_in_one_file_are_rejected(tmp_path: Path) -> None:
    """Two `[[tasks]]` with the same id point at the second one's `id` line."""
    text = '[[tasks]]\nid = "a"\nprompt = "p"\n[[tasks]]\nid = "a"\nprompt = "q"\n'
    error = _rejection(tmp_path, "t.toml", text)
    assert (error.line, error.field) == (5, "id")
    assert "duplicate id 'a'" in error.message


def test_non_utf8_bytes_are_rejected(tmp_path: Path) -> None:
    """A file that is not UTF-8 is rejected, saying where the bad byte is."""
    error = _rejection(tmp_path, "t.toml", b'prompt = "caf\xe9"\n')
    assert "not UTF-8" in error.message
    assert "byte 13" in error.message


def test_tasks_table_without_id_is_rejected(tmp_path: Path) -> None:
    """Every `[[tasks]]` table needs its own id (the file stem names only one task)."""
    error = _rejection(tmp_path, "t.toml", '\n[[tasks]]\nprompt = "p"\n')
    assert (error.line, error.field) == (2, "id")


def test_task_depending_on_itself_is_rejected(tmp_path: Path) -> None:
    """`depends_on` naming the task itself is a one-task cycle."""
    error = _rejection(tmp_path, "me.toml", 'prompt = "p"\ndepends_on = ["other", "me"]\n')
    assert (error.line, error.field) == (2, "depends_on")
    assert "depends on itself" in error.message


def test_top_level_keys_beside_tasks_tables_are_rejected(tmp_path: Path) -> None:
    """A file is either one task or `[[tasks]]`, not both."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\n[[tasks]]\nid = "a"\nprompt = "q"\n')
    assert (error.line, error.field) == (1, "prompt")


def test_tasks_that_is_not_a_list_of_tables_is_rejected(tmp_path: Path) -> None:
    """`tasks = "x"` is not `[[tasks]]`."""
    error = _rejection(tmp_path, "t.toml", 'tasks = "x"\n')
    assert (error.line, error.field) == (1, "tasks")


def test_empty_tasks_list_is_rejected(tmp_path: Path) -> None:
    """A file that defines no task at all is rejected."""
    error = _rejection(tmp_path, "t.toml", "tasks = []\n")
    assert error.field == "tasks"


# ---------------------------------------------------------------- ids that try to escape

_BAD_IDS = [
    "../x", "..", ".", ".hidden", "a/b", "/etc/passwd", "a\\b", "a" * 65, "a\x00b", "tâche",
    "ｔａｓｋ", "a b", "a\n", "", "~root", "a:b",
]


@pytest.mark.parametrize("task_id", _BAD_IDS)
def test_unsafe_ids_are_rejected(tmp_path: Path, task_id: str) -> None:
    """An id that could leave its folder, hide, or is not plain ASCII is rejected."""
    escaped = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else
                      f"\\u{ord(c):04x}" for c in task_id)
    error = _rejection(tmp_path, "t.toml", f'prompt = "p"\nid = "{escaped}"\n')
    assert (error.line, error.field) == (2, "id")
    assert not is_valid_id(task_id)


@pytest.mark.parametrize("dep", ["../x", "/abs", ".hidden", "a/../../b"])
def test_unsafe_dependency_ids_are_rejected(tmp_path: Path, dep: str) -> None:
    """`depends_on` entries follow the same id rules."""
    error = _rejection(tmp_path, "t.toml", f'prompt = "p"\ndepends_on = ["{dep}"]\n')
    assert (error.line, error.field) == (2, "depends_on")


@pytest.mark.parametrize("name", ["...toml", "bad name.toml", ("x" * 65) + ".toml"])
def test_file_stem_that_is_not_a_valid_id_is_rejected(tmp_path: Path, name: str) -> None:
    """The default id from the file name obeys the same rules."""
    error = _rejection(tmp_path, name, 'prompt = "p"\n')
    assert error.field == "id"


def test_task_constructor_refuses_an_unsafe_id() -> None:
    """`Task` itself validates, so no code path can make a task with a traversing id."""
    with pytest.raises(ValueError, match="id must match"):
        Task(id="../escape", prompt="p")


@pytest.mark.parametrize(("workdir", "why"), [("/etc", "absolute path '/etc'"),
                                              ("../elsewhere", "goes up with '..'"),
                                              ("sub/../../up", "goes up with '..'")])
def test_a_workdir_leading_out_of_the_fleets_workdir_is_rejected(
    tmp_path: Path, workdir: str, why: str
) -> None:
    """An absolute `workdir` or one with `..` is rejected, naming its line and the reason."""
    error = _rejection(tmp_path, "w.toml", f'prompt = "p"\nworkdir = "{workdir}"\n')
    assert (error.line, error.field) == (2, "workdir")
    assert why in error.message


def test_a_workdir_below_the_fleets_workdir_is_accepted(tmp_path: Path) -> None:
    """`workdir = "services/api"` stays inside the fleet's working directory."""
    [task] = parse_task_file(_write(tmp_path, "w.toml", 'prompt = "p"\nworkdir = "services/api"\n'))
    assert task.workdir == "services/api"


def test_every_bad_field_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Three bad fields: one error lists all three, each with its line and field, in order."""
    error = _rejection(tmp_path, "t.toml", 'prompt = "p"\npriority = "urgent"\n'
                       'max_attempts = 0\ncolour = "red"\n')
    assert [(p.line, p.field) for p in error.problems] == [
        (4, "colour"), (2, "priority"), (3, "max_attempts")]
    assert (error.line, error.field) == (4, "colour")  # the first, as before
    lines = str(error).splitlines()
    assert len(lines) == 3
    assert lines[1].startswith(f"{tmp_path / 't.toml'}:2: field 'priority'")


def test_bad_fields_of_several_tasks_tables_are_all_reported(tmp_path: Path) -> None:
    """Each [[tasks]] table's problems are reported, not only the first table's."""
    error = _rejection(tmp_path, "t.toml", '[[tasks]]\nid = "a"\nprompt = ""\n\n'
                       '[[tasks]]\nid = "b"\nprompt = "p"\ntimeout_s = -1\n')
    assert [(p.line, p.field) for p in error.problems] == [(3, "prompt"), (8, "timeout_s")]
    assert "[[tasks]] #2" in str(error)


def test_an_agent_that_names_no_known_profile_is_rejected(tmp_path: Path) -> None:
    """Given the known profile names, an unknown `agent` is rejected naming its line and the
    profiles there are."""
    path = _write(tmp_path, "t.toml", 'prompt = "p"\nagent = "claud"\n')
    with pytest.raises(TaskFileError) as info:
        parse_task_file(path, agents={"echo", "claude"})
    assert (info.value.line, info.value.field) == (2, "agent")
    assert "unknown agent profile 'claud'; known profiles are: claude, echo" in str(info.value)
    [task] = parse_task_file(_write(tmp_path, "u.toml", 'prompt = "p"\nagent = "claude"\n'),
                             agents={"echo", "claude"})
    assert task.agent == "claude"
