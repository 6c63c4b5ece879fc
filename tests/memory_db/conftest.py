"""Fixtures for the memory_db suite: a fake clock, and one database URL per backend.

Every backend test runs against SQLite (a file under tmp_path) and PostgreSQL on
127.0.0.1:5432 (a database created for this test session, emptied before each test and
dropped at the end). PostgreSQL tests are marked `postgres` and skip when it is down.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from fakeclock import FakeClock

from memory_db import AgentMemory

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this session; yields its name."""
    psycopg = pytest.importorskip("psycopg")
    name = f"memory_db_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 as user postgres: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session database, emptied, as a plain postgresql:// URL (mapped to psycopg)."""
    import psycopg

    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={pg_database}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return f"postgresql://postgres@127.0.0.1:5432/{pg_database}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'memory.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def memory(db_url: str, clock: FakeClock) -> Iterator[AgentMemory]:
    with AgentMemory(db_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def task_id(memory: AgentMemory) -> str:
    """A task already known to `memory`."""
    memory.record_task(
        "task-1",
        title="Fix the flaky test",
        prompt="Make tests/test_x.py pass",
        priority="normal",
        state="pending",
        created_by="alice",
    )
    return "task-1"
