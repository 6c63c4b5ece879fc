"""Read-only access to the memory: checked raw SQL, and the named queries the CLI exposes.

Two locks on the door. `check_read_only_sql` lets through exactly one SELECT / WITH /
EXPLAIN / VALUES statement with no write keyword outside strings and comments, and no call
of a PostgreSQL function that acts outside the transaction (READ ONLY does not stop
`pg_terminate_backend` or `pg_advisory_lock`); then the statement runs in
`transaction(read_only=True)`, where the database itself refuses any write that slipped
past the check. Every read has a statement timeout (on SQLite too, through its progress
handler), so an unbounded recursive CTE ends with `QueryTimedOut`.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import Double, Engine, Select, case, cast, func, select, text
from sqlalchemy.exc import DBAPIError, StatementError

from memory_db.engine import transaction
from memory_db.errors import InvalidQuery, QueryTimedOut, ReadOnlyViolation
from memory_db.models import (
    AttemptOutcome,
    AttemptRow,
    DeadEndRow,
    ModificationOutcome,
    ModificationRow,
    TaskRow,
    TelemetryRow,
)

__all__ = [
    "NAMED_QUERIES",
    "NamedQuery",
    "QueryFilter",
    "QueryResult",
    "check_read_only_sql",
    "run_named_query",
    "run_readonly_sql",
]

_READ_STARTS = frozenset({"SELECT", "WITH", "EXPLAIN", "VALUES"})

# Words that never belong in a read: DML/DDL (also inside a CTE), SQLite's ATTACH/PRAGMA,
# PostgreSQL's SELECT ... INTO (creates a table), COPY, locking reads, session changes.
_WRITE_WORDS = frozenset(
    {
        "ALTER", "ATTACH", "CALL", "COPY", "CREATE", "DELETE", "DETACH", "DROP", "GRANT",
        "INSERT", "INTO", "LOCK", "MERGE", "PRAGMA", "REINDEX", "REVOKE", "SET", "TRUNCATE",
        "UPDATE", "UPSERT", "VACUUM",
    }
)  # fmt: skip

# PostgreSQL functions a read-only transaction still lets act on the server (signal or
# terminate backends, take advisory locks, sleep, read server files, reload or change
# settings, notify) or that run a query given as a string, past the check above.
_REFUSED_FUNCTIONS = re.compile(
    r"pg_(cancel|terminate)_backend|pg_(try_)?advisory\w*|pg_sleep\w*|pg_read_\w*|pg_ls_\w*"
    r"|pg_stat_file|pg_reload_conf|pg_rotate_logfile|pg_notify|pg_promote|pg_switch_wal"
    r"|pg_(create|drop)_\w*|pg_replication_\w*|pg_logical_\w*|pg_file_\w*|pg_log_\w*"
    r"|pg_wal_\w*|pg_backup_\w*|pg_(start|stop)_backup|pg_export_snapshot|set_config"
    r"|dblink\w*|lo_\w*|query_to_xml\w*|cursor_to_xml\w*|ts_stat|pg_import_\w*",
    re.IGNORECASE,
)
_QUOTED_NAME = re.compile(r'(U&)?"((?:[^"]|"")*)"', re.IGNORECASE)

DEFAULT_TIMEOUT_S = 10.0
"""How long one read-only query may run before the database stops it."""

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")


class QueryResult(NamedTuple):
    """Column names and rows of one query; unpacks as `columns, rows`."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def check_read_only_sql(sql: str) -> None:
    """Raise `ReadOnlyViolation` unless `sql` is one SELECT / WITH / EXPLAIN / VALUES statement.

    PRAGMA is refused outright; SQLite's `pragma_*` table-valued functions still work.
    """
    if not isinstance(sql, str):
        raise InvalidQuery(f"sql must be a str, got {type(sql).__name__}")
    # Dialects disagree on backslashes in E'...' strings; the statement must pass both ways.
    for e_strings_escape in (False, True):
        code = _blank_literals_and_comments(sql, e_strings_escape=e_strings_escape)
        _check_code(sql, code)
        _check_functions(sql, code)


def _check_functions(sql: str, code: str) -> None:
    # A function can be called by a quoted name too ("pg_sleep"(1)); a U&"..." name can spell
    # it in escapes, so those are refused outright.
    names = _WORD.findall(code)
    for match in _QUOTED_NAME.finditer(sql):
        if match.group(1):
            raise ReadOnlyViolation(sql, 'U&"..." quoted names are not allowed')
        names.append(match.group(2))
    for name in names:
        if _REFUSED_FUNCTIONS.fullmatch(name):
            raise ReadOnlyViolation(sql, f"{name} acts outside a read-only query")


def _check_code(sql: str, code: str) -> None:
    code = code.strip()
    if code.endswith(";"):
        code = code[:-1].rstrip()
    if not code:
        raise ReadOnlyViolation(sql, "empty statement")
    if ";" in code:
        raise ReadOnlyViolation(sql, "more than one statement")
    words = [word.upper() for word in _WORD.findall(code)]
    if not words or words[0] not in _READ_STARTS:
        raise ReadOnlyViolation(sql, "only SELECT, WITH, EXPLAIN or VALUES may run")
    forbidden = sorted(set(words) & _WRITE_WORDS)
    if forbidden:
        raise ReadOnlyViolation(sql, f"{forbidden[0]} is not allowed in a read-only query")


def run_readonly_sql(
    engine: Engine, sql: str, params: Mapping[str, Any] | None = None, *,
    timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic,
) -> QueryResult:
    """Run one read statement (`:name` placeholders bound from `params`); nothing is written.

    Raises `ReadOnlyViolation` for anything but one read statement (checked before it runs,
    and again by the database), `QueryTimedOut` when it runs past `timeout_s` (on `clock`,
    for SQLite; PostgreSQL keeps its own `statement_timeout`), `InvalidQuery` when the
    database rejects the SQL.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    check_read_only_sql(sql)
    return _run(engine, text(sql), dict(params or {}), sql, timeout_s=timeout_s, clock=clock)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryFilter:
    """One optional filter of a named query; `parse` turns the CLI's text into a value."""

    name: str
    description: str
    parse: Callable[[str], Any] = str


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedQuery:
    """A read-only query with a name, a description and optional filters."""

    name: str
    description: str
    filters: tuple[QueryFilter, ...]
    build: Callable[..., Select[Any]]

    def __post_init__(self) -> None:
        names = [f.name for f in self.filters]
        if len(set(names)) != len(names):
            raise ValueError(f"filters of {self.name!r} repeat a name: {names!r}")


def run_named_query(engine: Engine, name: str, **filters: Any) -> QueryResult:
    """Run `NAMED_QUERIES[name]`; filters left None are ignored, the others parsed and checked.

    Raises `InvalidQuery` for an unknown name, an unknown filter, or a bad filter value.
    """
    query = NAMED_QUERIES.get(name)
    if query is None:
        raise InvalidQuery(f"unknown query {name!r}; known: {', '.join(NAMED_QUERIES)}")
    known = {f.name: f for f in query.filters}
    unknown = sorted(set(filters) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise InvalidQuery(f"query {name!r} has no filter {unknown[0]!r} (filters: {allowed})")
    parsed: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            continue
        try:
            # Parse typed values too (`limit=0` from argparse), so every value is checked.
            parsed[key] = known[key].parse(value if isinstance(value, str) else str(value))
        except (TypeError, ValueError) as exc:
            raise InvalidQuery(f"query {name!r}: bad {key} {value!r}: {exc}") from exc
    return _run(engine, query.build(**parsed), {}, name)


def _run(
    engine: Engine, statement: Any, params: dict[str, Any], shown: str, *,
    timeout_s: float = DEFAULT_TIMEOUT_S, clock: Callable[[], float] = time.monotonic,
) -> QueryResult:
    deadline = clock() + timeout_s
    try:
        with transaction(engine, read_only=True) as session:
            connection = session.connection()
            with _statement_timeout(connection, timeout_s, lambda: clock() >= deadline):
                result = connection.execute(statement, params)
                if not result.returns_rows:
                    return QueryResult((), ())
                return QueryResult(tuple(result.keys()), tuple(tuple(row) for row in result))
    except ReadOnlyViolation:
        raise
    except (DBAPIError, StatementError) as exc:
        if _is_timeout(exc) or (engine.dialect.name == "sqlite" and clock() >= deadline):
            raise QueryTimedOut(timeout_s, query=shown) from exc
        cause = exc.orig if exc.orig is not None else exc
        raise InvalidQuery(f"query failed: {cause}", query=shown) from exc


@contextlib.contextmanager
def _statement_timeout(connection: Any, timeout_s: float, late: Callable[[], bool]) -> Any:
    """Stop the statement after `timeout_s`: PostgreSQL's `statement_timeout` for this
    transaction; on SQLite a progress handler (every few thousand VM steps) that interrupts
    it once `late()`. Other backends run without one."""
    backend = connection.dialect.name
    if backend == "postgresql":
        connection.execute(text(f"SET LOCAL statement_timeout = {max(1, round(timeout_s * 1000))}"))
        yield
    elif backend == "sqlite":
        raw = connection.connection.dbapi_connection
        raw.set_progress_handler(lambda: 1 if late() else 0, 10_000)
        try:
            yield
        finally:
            raw.set_progress_handler(None, 0)
    else:
        yield


def _is_timeout(exc: DBAPIError | StatementError) -> bool:
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "57014"  # query_canceled


def _blank_literals_and_comments(sql: str, *, e_strings_escape: bool) -> str:
    """`sql` with string literals, quoted identifiers and comments replaced by spaces.

    `e_strings_escape`: whether a backslash escapes a quote inside E'...' (PostgreSQL) or
    not (SQLite). A block comment ends at its first */, so nesting only reveals more code.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        after_word = i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")
        if ch in "'\"`":
            backslash_escapes = e_strings_escape and ch == "'" and _is_escape_string_prefix(sql, i)
            end = i + 1
            while end < n:
                if backslash_escapes and sql[end] == "\\":
                    end += 2
                    continue
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # doubled quote escapes itself
                        end += 2
                        continue
                    break
                end += 1
            i = end + 1
            out.append(" ")
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
            out.append(" ")
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end == -1 else end + 2
            out.append(" ")
        elif ch == "$" and not after_word and (match := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(match.group(), match.end())
            i = n if end == -1 else end + len(match.group())
            out.append(" ")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _is_escape_string_prefix(sql: str, quote_at: int) -> bool:
    """True when the quote at `quote_at` opens a PostgreSQL E'...' string."""
    if quote_at == 0 or sql[quote_at - 1] not in "eE":
        return False
    return quote_at == 1 or not (sql[quote_at - 2].isalnum() or sql[quote_at - 2] in "_$")


# -- named queries ----------------------------------------------------------------------


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


_LIMIT = QueryFilter(name="limit", description="at most this many rows", parse=_positive_int)
_TASK = QueryFilter(name="task_id", description="only this task")
_AGENT = QueryFilter(name="agent", description="only this agent")
_FAILED = (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT)


def _tasks(*, state: str | None = None, limit: int = 100) -> Select[Any]:
    query = select(
        TaskRow.id.label("task_id"),
        TaskRow.state,
        TaskRow.priority,
        TaskRow.title,
        TaskRow.created_by,
        TaskRow.created_at,
        TaskRow.updated_at,
    ).order_by(TaskRow.updated_at.desc(), TaskRow.id)
    if state is not None:
        query = query.where(TaskRow.state == state)
    return query.limit(limit)


def _attempts(
    *, task_id: str | None = None, agent: str | None = None, limit: int = 50
) -> Select[Any]:
    query = select(
        AttemptRow.id.label("attempt_id"),
        AttemptRow.task_id,
        AttemptRow.attempt,
        AttemptRow.agent,
        AttemptRow.outcome,
        AttemptRow.exit_code,
        AttemptRow.duration_s,
        AttemptRow.started_at,
        AttemptRow.ended_at,
        AttemptRow.heartbeats,
        AttemptRow.last_heartbeat_at,
        AttemptRow.reason,
        AttemptRow.log_path,
    ).order_by(AttemptRow.started_at.desc(), AttemptRow.id.desc())
    if task_id is not None:
        query = query.where(AttemptRow.task_id == task_id)
    if agent is not None:
        query = query.where(AttemptRow.agent == agent)
    return query.limit(limit)


def _failures(
    *, task_id: str | None = None, agent: str | None = None, limit: int = 50
) -> Select[Any]:
    query = (
        select(
            AttemptRow.id.label("attempt_id"),
            AttemptRow.task_id,
            AttemptRow.attempt,
            AttemptRow.agent,
            AttemptRow.outcome,
            AttemptRow.exit_code,
            AttemptRow.reason,
            AttemptRow.ended_at,
            AttemptRow.log_path,
        )
        .where(AttemptRow.outcome.in_(_FAILED))
        .order_by(AttemptRow.ended_at.desc(), AttemptRow.id.desc())
    )
    if task_id is not None:
        query = query.where(AttemptRow.task_id == task_id)
    if agent is not None:
        query = query.where(AttemptRow.agent == agent)
    return query.limit(limit)


def _dead_ends(*, module: str | None = None, limit: int = 50) -> Select[Any]:
    query = select(
        DeadEndRow.id.label("dead_end_id"),
        DeadEndRow.module,
        DeadEndRow.description,
        DeadEndRow.reason,
        DeadEndRow.evidence,
        DeadEndRow.created_at,
    ).order_by(DeadEndRow.created_at.desc(), DeadEndRow.id.desc())
    if module is not None:
        query = query.where(DeadEndRow.module == module)
    return query.limit(limit)


def _telemetry(*, limit: int = 50) -> Select[Any]:
    return select(
        TelemetryRow.id.label("telemetry_id"),
        TelemetryRow.taken_at,
        TelemetryRow.sources,
        TelemetryRow.values.label("metric_values"),
    ).order_by(TelemetryRow.taken_at.desc(), TelemetryRow.id.desc()).limit(limit)


def _modifications(
    *, outcome: ModificationOutcome | None = None, task_id: str | None = None, limit: int = 50
) -> Select[Any]:
    query = select(
        ModificationRow.id.label("mod_id"),
        ModificationRow.outcome,
        ModificationRow.description,
        ModificationRow.task_id,
        ModificationRow.files_changed,
        ModificationRow.metric_deltas,
        ModificationRow.branch,
        ModificationRow.commit_sha.label("commit"),
        ModificationRow.created_at,
        ModificationRow.updated_at,
    ).order_by(ModificationRow.created_at.desc(), ModificationRow.id.desc())
    if outcome is not None:
        query = query.where(ModificationRow.outcome == ModificationOutcome(outcome))
    if task_id is not None:
        query = query.where(ModificationRow.task_id == task_id)
    return query.limit(limit)


def _stats(*, task_id: str | None = None, agent: str | None = None) -> Select[Any]:
    def count_of(outcome: AttemptOutcome) -> Any:
        return func.coalesce(func.sum(case((AttemptRow.outcome == outcome, 1), else_=0)), 0)

    finished = func.count(AttemptRow.outcome)  # COUNT(col) skips attempts still running
    query = (
        select(
            AttemptRow.agent,
            func.count().label("attempts"),
            *(count_of(outcome).label(outcome.value) for outcome in AttemptOutcome),
            (func.count() - finished).label("running"),
            func.avg(AttemptRow.duration_s).label("mean_duration_s"),
            (cast(count_of(AttemptOutcome.SUCCEEDED), Double) / func.nullif(finished, 0)).label(
                "success_rate"
            ),
        )
        .group_by(AttemptRow.agent)
        .order_by(AttemptRow.agent)
    )
    if task_id is not None:
        query = query.where(AttemptRow.task_id == task_id)
    if agent is not None:
        query = query.where(AttemptRow.agent == agent)
    return query


def _named(*queries: NamedQuery) -> Mapping[str, NamedQuery]:
    return MappingProxyType({query.name: query for query in queries})


NAMED_QUERIES: Mapping[str, NamedQuery] = _named(
    NamedQuery(
        name="tasks",
        description="known tasks, most recently changed first",
        filters=(QueryFilter(name="state", description="only tasks in this state"), _LIMIT),
        build=_tasks,
    ),
    NamedQuery(
        name="attempts",
        description="agent attempts, newest first",
        filters=(_TASK, _AGENT, _LIMIT),
        build=_attempts,
    ),
    NamedQuery(
        name="failures",
        description="failed and timed-out attempts with their reasons, newest first",
        filters=(_TASK, _AGENT, _LIMIT),
        build=_failures,
    ),
    NamedQuery(
        name="dead-ends",
        description="approaches that failed and should not be retried, newest first",
        filters=(QueryFilter(name="module", description="only this module"), _LIMIT),
        build=_dead_ends,
    ),
    NamedQuery(
        name="modifications",
        description="changes the fleet made to this system, newest first",
        filters=(
            QueryFilter(
                name="outcome",
                description="only this outcome: "
                + ", ".join(outcome.value for outcome in ModificationOutcome),
                parse=ModificationOutcome,
            ),
            _TASK,
            _LIMIT,
        ),
        build=_modifications,
    ),
    NamedQuery(
        name="telemetry",
        description="stored telemetry snapshots (every metric's value), newest first",
        filters=(_LIMIT,),
        build=_telemetry,
    ),
    NamedQuery(
        name="stats",
        description="per agent: attempts by outcome, mean duration (s), success rate",
        filters=(_TASK, _AGENT),
        build=_stats,
    ),
)
"""Every named query, by the name `coordinator memory query NAME` takes."""
