"""Read-only access: one read statement runs; anything that could write is refused."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock
from sqlalchemy import inspect, text

from memory_db import (
    NAMED_QUERIES,
    AgentMemory,
    InvalidQuery,
    QueryTimedOut,
    ReadOnlyViolation,
    run_named_query,
    run_readonly_sql,
    transaction,
)
from memory_db.queries import check_read_only_sql


def _snapshot(memory: AgentMemory) -> tuple[object, ...]:
    """Everything a write could change: table names and every task and attempt row."""
    with memory.engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
        tasks = conn.execute(text("SELECT * FROM tasks ORDER BY id")).all()
        attempts = conn.execute(text("SELECT * FROM attempts ORDER BY id")).all()
    return tables, tasks, attempts


@pytest.fixture
def history(memory: AgentMemory, task_id: str, clock: FakeClock) -> AgentMemory:
    """A memory with a little history: two agents, each outcome kind, a dead end, a change."""
    memory.record_task("t2", title="", prompt="", priority="low", state="pending", created_by=None)
    for task, agent, outcome, seconds, reason in [
        (task_id, "a1", "succeeded", 10.0, None),
        (task_id, "a1", "failed", 20.0, "tests failed"),
        ("t2", "a1", "timed_out", 30.0, "ran past 30s"),
        ("t2", "a2", "succeeded", 4.0, None),
        ("t2", "a2", "lease_lost", 6.0, "heartbeat missed"),
    ]:
        attempt_id = memory.start_attempt(task, attempt=1, agent=agent, log_path=None)
        clock.advance(seconds)
        memory.finish_attempt(attempt_id, outcome=outcome, exit_code=None, reason=reason)
    memory.start_attempt("t2", attempt=2, agent="a2", log_path=None)  # still running
    memory.record_dead_end("drop retries", module="retry", reason="worse", evidence="e")
    memory.record_dead_end("huge cache", module="cache", reason="no gain", evidence="e")
    memory.record_modification("ttl 60s", files_changed=["c.py"], outcome="Deployed")
    memory.record_modification("breaker 3", files_changed=["b.py"], outcome="RolledBack")
    return memory


# -- raw SQL ----------------------------------------------------------------------------


def test_select_returns_columns_and_rows(memory: AgentMemory, task_id: str) -> None:
    """A SELECT returns its column names and rows, with :name parameters bound."""
    columns, rows = run_readonly_sql(
        memory.engine, "SELECT id, state FROM tasks WHERE id = :id", {"id": task_id}
    )
    assert (columns, rows) == (("id", "state"), ((task_id, "pending"),))


@pytest.mark.parametrize(
    "sql",
    [
        "WITH t AS (SELECT id FROM tasks) SELECT count(*) FROM t",
        "VALUES (1, 2)",
        "EXPLAIN SELECT * FROM tasks",
        "select 'DELETE FROM tasks; DROP TABLE tasks' as quoted;",
        'SELECT 1 AS "update" -- ; DROP TABLE tasks',
        "SELECT replace(title, 'a', 'b') FROM tasks /* no INSERT here */",
        "SELECT 'it''s; DELETE' AS quoted",
    ],
)
def test_plain_reads_are_allowed(memory: AgentMemory, task_id: str, sql: str) -> None:
    """CTEs, VALUES, EXPLAIN, and write words inside strings or comments are fine."""
    before = _snapshot(memory)
    columns, _rows = run_readonly_sql(memory.engine, sql)
    assert columns
    assert _snapshot(memory) == before


NOT_ONE_READ = [
    "INSERT INTO tasks (id) VALUES ('x')",
    "UPDATE tasks SET state = 'done'",
    "DELETE FROM tasks",
    "DROP TABLE tasks",
    "CREATE TABLE evil (x INTEGER)",
    "ALTER TABLE tasks ADD COLUMN evil TEXT",
    "ATTACH DATABASE 'evil.db' AS evil",
    "PRAGMA query_only = OFF",
    "PRAGMA journal_mode = DELETE",
    "SELECT 1; DELETE FROM tasks",
    "SELECT 1;; ",
    "WITH gone AS (DELETE FROM tasks RETURNING id) SELECT * FROM gone",
    "WITH x AS (SELECT 1) DELETE FROM tasks",
    "WITH x AS (SELECT 1) INSERT INTO tasks (id) SELECT 'y' FROM x",
    "SELECT * INTO copied FROM tasks",
    "SELECT * FROM tasks FOR UPDATE",
    "EXPLAIN ANALYZE DELETE FROM tasks",
    "/* hello */ DELETE FROM tasks",
    "SELECT E'\\'' ; DELETE FROM tasks; --'",
    "SELECT E'\\' ; DELETE FROM tasks; --'",
    "SELECT $$x$$; DELETE FROM tasks",
    "VACUUM",
    "",
    "   -- only a comment",
]


@pytest.mark.parametrize("sql", NOT_ONE_READ)
def test_anything_that_is_not_one_read_is_refused_before_it_runs(sql: str) -> None:
    """Writes, DDL, ATTACH, PRAGMA, several statements and disguised writes are refused."""
    with pytest.raises(ReadOnlyViolation) as caught:
        check_read_only_sql(sql)
    assert isinstance(caught.value, PermissionError)
    assert caught.value.statement == sql


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM tasks",
        "DROP TABLE tasks",
        "ATTACH DATABASE 'evil.db' AS evil",
        "PRAGMA query_only = OFF",
        "SELECT 1; DELETE FROM tasks",
        "WITH gone AS (DELETE FROM tasks RETURNING id) SELECT * FROM gone",
        "WITH x AS (SELECT 1) DELETE FROM tasks",
    ],
)
def test_refused_statements_change_nothing(memory: AgentMemory, task_id: str, sql: str) -> None:
    """run_readonly_sql refuses them with ReadOnlyViolation and the database is unchanged."""
    before = _snapshot(memory)
    with pytest.raises(ReadOnlyViolation):
        run_readonly_sql(memory.engine, sql)
    assert _snapshot(memory) == before


@pytest.mark.parametrize(
    "write",
    [
        "DELETE FROM tasks",
        "UPDATE tasks SET state = 'done'",
        "INSERT INTO tasks (id, title, prompt, priority, state, created_at, updated_at) "
        "VALUES ('x', '', '', 'low', 'pending', 0, 0)",
        "DROP TABLE attempts",
    ],
)
def test_the_database_itself_refuses_writes_in_a_read_only_transaction(
    memory: AgentMemory, task_id: str, write: str
) -> None:
    """Past the statement check, a read-only transaction still cannot change anything."""
    before = _snapshot(memory)
    with pytest.raises(ReadOnlyViolation), transaction(memory.engine, read_only=True) as session:
        session.execute(text(write))
    assert _snapshot(memory) == before


def test_read_only_mode_does_not_leak_into_later_writes(memory: AgentMemory, task_id: str) -> None:
    """After a read-only query, the same engine writes normally again."""
    with pytest.raises(ReadOnlyViolation):
        run_readonly_sql(memory.engine, "DELETE FROM tasks")
    with pytest.raises(ReadOnlyViolation), transaction(memory.engine, read_only=True) as session:
        session.execute(text("DELETE FROM tasks"))
    run_readonly_sql(memory.engine, "SELECT 1")
    memory.set_task_state(task_id, "done")
    assert memory.task(task_id).state == "done"


def test_sql_the_database_rejects_raises_invalid_query(memory: AgentMemory) -> None:
    """A read of a table that does not exist is an InvalidQuery naming the problem."""
    with pytest.raises(InvalidQuery, match="no_such_table"):
        run_readonly_sql(memory.engine, "SELECT * FROM no_such_table")


_FOREVER = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def test_an_unbounded_recursive_query_is_stopped_by_its_timeout(memory: AgentMemory) -> None:
    """A recursive CTE with no end stops at its statement timeout with QueryTimedOut, and the
    same connection serves the next query."""
    with pytest.raises(QueryTimedOut, match=r"0\.3s statement timeout") as caught:
        run_readonly_sql(memory.engine, _FOREVER, timeout_s=0.3)
    assert isinstance(caught.value, InvalidQuery)
    assert run_readonly_sql(memory.engine, "SELECT 1").rows == ((1,),)


def test_the_sqlite_timeout_runs_on_the_injected_clock(tmp_path) -> None:
    """On SQLite the deadline is read from `clock`: a clock past it stops the query."""
    times = iter([0.0, *[1000.0] * 10_000])
    with AgentMemory(f"sqlite:///{tmp_path / 'm.db'}") as memory, \
            pytest.raises(QueryTimedOut):
        run_readonly_sql(memory.engine, _FOREVER, timeout_s=5.0, clock=lambda: next(times))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT pg_terminate_backend(1)",
        "SELECT pg_catalog.pg_cancel_backend(1)",
        "SELECT pg_advisory_lock(42)",
        "SELECT PG_TRY_ADVISORY_XACT_LOCK(42)",
        "SELECT pg_sleep(100)",
        'SELECT "pg_sleep"(100)',
        'SELECT U&"\\0070g_sleep"(100)',
        "SELECT set_config('work_mem', '1GB', false)",
        "SELECT query_to_xml('select pg_terminate_backend(1)', true, true, '')",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT * FROM dblink('host=x', 'select 1') AS t(i int)",
    ],
)
def test_server_acting_functions_are_refused_before_they_run(sql: str) -> None:
    """Functions READ ONLY does not stop (signals, advisory locks, sleeps, server files,
    settings, queries given as strings) are refused, whatever the spelling."""
    with pytest.raises(ReadOnlyViolation, match=r"acts outside|quoted names"):
        check_read_only_sql(sql)


def test_catalog_reads_and_harmless_functions_still_run(memory: AgentMemory) -> None:
    """Only the refused functions are refused: counts, strings and `pg_`-named tables pass."""
    check_read_only_sql("SELECT count(*), upper('pg_sleep') FROM pg_catalog.pg_tables")
    assert run_readonly_sql(memory.engine, "SELECT lower('PG_SLEEP(1)')").rows == (
        ("pg_sleep(1)",),
    )


# -- named queries ----------------------------------------------------------------------


def test_named_queries_registry_lists_the_cli_queries() -> None:
    """The registry holds the queries the CLI exposes, each described."""
    assert set(NAMED_QUERIES) >= {"attempts", "failures", "dead-ends", "modifications", "stats"}
    for name, query in NAMED_QUERIES.items():
        assert query.name == name
        assert query.description
        assert all(f.description for f in query.filters)


def test_stats_counts_outcomes_and_rates_per_agent(history: AgentMemory) -> None:
    """stats: per agent, attempts by outcome, mean duration and success rate."""
    columns, rows = run_named_query(history.engine, "stats")
    by_agent = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    a1, a2 = by_agent["a1"], by_agent["a2"]
    assert (a1["attempts"], a1["succeeded"], a1["failed"], a1["timed_out"]) == (3, 1, 1, 1)
    assert a1["mean_duration_s"] == pytest.approx(20.0)
    assert a1["success_rate"] == pytest.approx(1 / 3)
    assert (a2["attempts"], a2["succeeded"], a2["lease_lost"], a2["running"]) == (3, 1, 1, 1)
    assert a2["mean_duration_s"] == pytest.approx(5.0)
    assert a2["success_rate"] == pytest.approx(0.5)


def test_failures_lists_failed_and_timed_out_attempts_with_reasons(history: AgentMemory) -> None:
    """failures: only failed and timed-out attempts, newest first, with their reasons."""
    columns, rows = run_named_query(history.engine, "failures")
    got = [(row[columns.index("outcome")], row[columns.index("reason")]) for row in rows]
    assert got == [("timed_out", "ran past 30s"), ("failed", "tests failed")]
    assert run_named_query(history.engine, "failures", agent="a2").rows == ()


def test_stats_can_be_narrowed_to_one_agent(history: AgentMemory) -> None:
    """stats with an agent filter reports only that agent."""
    columns, rows = run_named_query(history.engine, "stats", agent="a2")
    assert [row[columns.index("agent")] for row in rows] == ["a2"]


def test_attempts_can_be_narrowed_by_task_and_limited(history: AgentMemory, task_id: str) -> None:
    """attempts: a task filter and a limit given as text, as the CLI passes them."""
    columns, rows = run_named_query(history.engine, "attempts", task_id=task_id, limit="1")
    assert len(rows) == 1
    assert rows[0][columns.index("task_id")] == task_id
    assert rows[0][columns.index("outcome")] == "failed"
    _, all_rows = run_named_query(history.engine, "attempts", task_id=None, limit=None)
    assert len(all_rows) == 6


def test_dead_ends_and_modifications_filter(history: AgentMemory) -> None:
    """dead-ends by module; modifications by outcome."""
    columns, rows = run_named_query(history.engine, "dead-ends", module="cache")
    assert [row[columns.index("description")] for row in rows] == ["huge cache"]
    columns, rows = run_named_query(history.engine, "modifications", outcome="RolledBack")
    assert [row[columns.index("description")] for row in rows] == ["breaker 3"]
    assert rows[0][columns.index("files_changed")] == ["b.py"]


@pytest.mark.parametrize(
    ("name", "filters", "message"),
    [
        ("nope", {}, "unknown query 'nope'"),
        ("stats", {"module": "x"}, "no filter 'module'"),
        ("attempts", {"limit": "zero"}, "bad limit"),
        ("attempts", {"limit": "0"}, "bad limit"),
        ("attempts", {"limit": 0}, "bad limit"),
        ("modifications", {"outcome": "Done"}, "bad outcome"),
    ],
)
def test_bad_named_query_requests_raise_invalid_query(
    memory: AgentMemory, name: str, filters: dict[str, object], message: str
) -> None:
    """Unknown names, unknown filters and bad filter values are InvalidQuery (a ValueError)."""
    with pytest.raises(InvalidQuery, match=message) as caught:
        run_named_query(memory.engine, name, **filters)
    assert isinstance(caught.value, ValueError)
