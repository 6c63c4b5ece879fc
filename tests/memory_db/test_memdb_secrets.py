"""API keys and tokens never reach the memory database."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock
from sqlalchemy import text

from memory_db import AgentMemory, redact_secrets

ANTHROPIC_KEY = "sk-ant-api03-Zq7xK2mN9pL4vR8tY1wB6cD3fG5hJ0aS"
OPENAI_KEY = "sk-proj-4fT9kLm2Qx7Rz1Vb8Nc3Wd6Ye0Ua5Sg"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl"
HEADER_KEY = "a1b2c3d4e5f6a7b8c9d0"


@pytest.mark.parametrize(
    ("text_in", "text_out"),
    [
        (f"use {ANTHROPIC_KEY} please", "use [REDACTED] please"),
        (f"OPENAI key={OPENAI_KEY}", "OPENAI key=[REDACTED]"),
        (f"Authorization: Bearer {BEARER_TOKEN}", "Authorization: [REDACTED]"),
        (f"sent bearer {BEARER_TOKEN} upstream", "sent bearer [REDACTED] upstream"),
        (f'-H "x-api-key: {HEADER_KEY}"', '-H "x-api-key: [REDACTED]"'),
        (f"ANTHROPIC_API_KEY={HEADER_KEY} claude", "ANTHROPIC_API_KEY=[REDACTED] claude"),
        (f'{{"api_key": "{HEADER_KEY}"}}', '{"api_key": "[REDACTED]"}'),
        ("ghp_" + "x" * 36, "[REDACTED]"),
        ("AKIAIOSFODNN7EXAMPLE", "[REDACTED]"),
    ],
)
def test_redact_secrets_replaces_keys_and_tokens(text_in: str, text_out: str) -> None:
    """Provider keys, bearer tokens and key headers/assignments become [REDACTED]."""
    assert redact_secrets(text_in) == text_out


@pytest.mark.parametrize(
    "harmless",
    [
        "tests/test_sk-parsing.py failed",
        "bump max_tokens to 4096",
        "the api key header was missing",
        "",
    ],
)
def test_redact_secrets_leaves_ordinary_text_alone(harmless: str) -> None:
    """Text without credentials passes through unchanged."""
    assert redact_secrets(harmless) == harmless


def _fill_with_secrets(memory: AgentMemory) -> None:
    memory.record_task(
        "t1",
        title=f"rotate {ANTHROPIC_KEY}",
        prompt=f"Call the API with x-api-key: {HEADER_KEY} and {OPENAI_KEY}",
        priority="high",
        state="pending",
        created_by="alice",
    )
    attempt_id = memory.start_attempt("t1", attempt=1, agent="a1", log_path=None)
    memory.finish_attempt(
        attempt_id, outcome="failed", exit_code=1, reason=f"401 for Bearer {BEARER_TOKEN}"
    )
    memory.record_dead_end(
        f"hardcode {ANTHROPIC_KEY}",
        module="providers",
        reason=f"leaks {OPENAI_KEY}",
        evidence=f"curl -H 'Authorization: Bearer {BEARER_TOKEN}'",
    )
    memory.record_modification(f"use {OPENAI_KEY}", files_changed=["p.py"])
    memory.snapshot_config(
        "live",
        {"api_key": HEADER_KEY, "provider": {"headers": [f"x-api-key: {HEADER_KEY}"]}},
    )


SECRETS = (ANTHROPIC_KEY, OPENAI_KEY, BEARER_TOKEN, HEADER_KEY)


def test_secrets_are_redacted_in_every_stored_field(memory: AgentMemory) -> None:
    """Every free-text field and config value reads back redacted, on every backend."""
    _fill_with_secrets(memory)
    with memory.engine.connect() as conn:
        dumped = repr(
            [
                conn.execute(text(f"SELECT * FROM {table}")).all()
                for table in ("tasks", "attempts", "dead_ends", "modifications", "config_snapshots")
            ]
        )
    assert "[REDACTED]" in dumped
    for secret in SECRETS:
        assert secret not in dumped


def test_a_key_never_reaches_the_sqlite_file(tmp_path, clock: FakeClock) -> None:
    """After writing secrets everywhere, no byte of the database files contains them."""
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}", clock=clock) as memory:
        _fill_with_secrets(memory)
        files = sorted(tmp_path.glob("memory.db*"))
        assert files  # memory.db, and the WAL while it is open
        for path in files:
            content = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in content, f"{secret!r} found in {path.name}"
    content = (tmp_path / "memory.db").read_bytes()
    assert b"[REDACTED]" in content
    for secret in SECRETS:
        assert secret.encode() not in content
