"""What clients learn of an upstream failure (a generic message with an error id; the details
in the log), and the clamps on what a client announces (`X-Stainless-Timeout`)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import anthropic
import pytest
from fakes import Fail, FakeAnthropic

from orchestrator import AnthropicWorker, Pipeline, PipelineConfig, Tunables
from orchestrator.server import ServerTask, create_app
from orchestrator.server.bodies import MAX_CLIENT_TIMEOUT_S, client_timeout_s


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeAnthropic, anthropic.AsyncAnthropic]]:
    async with FakeAnthropic() as upstream:
        pipeline = Pipeline(
            PipelineConfig(tunables=Tunables(retry_max_attempts=1)),
            AnthropicWorker("sk-ant-test-key-0000", base_url=upstream.url, model="claude-x"),
        )
        async with ServerTask(create_app(pipeline)) as url:
            yield upstream, anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)


@pytest.mark.parametrize("status", [401, 403, 500, 503])
async def test_an_upstream_failure_reaches_clients_as_a_generic_message(
    served: tuple[FakeAnthropic, anthropic.AsyncAnthropic],
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """The upstream's own error text (about our key, its internals) is not the client's: the
    client gets which provider failed and an error id; the log has the text under that id."""
    upstream, sdk = served
    upstream.fail_next(Fail(status=status, message="internal detail: org-7f3e billing hold"))
    with caplog.at_level(logging.WARNING), pytest.raises(anthropic.APIStatusError) as raised:
        await sdk.messages.create(
            model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    message = str(raised.value)
    assert "internal detail" not in message and "org-7f3e" not in message
    assert f"HTTP {status}" in message
    error_id = re.search(r"err_[0-9a-f]{16}", message)
    assert error_id is not None
    logged = [r.getMessage() for r in caplog.records if error_id.group() in r.getMessage()]
    assert logged and "org-7f3e billing hold" in logged[0]


async def test_an_upstream_400_still_tells_the_client_what_was_wrong(
    served: tuple[FakeAnthropic, anthropic.AsyncAnthropic],
) -> None:
    """A 400 is about the client's own request: its text is what the client needs."""
    upstream, sdk = served
    upstream.fail_next(Fail(status=400, message="max_tokens: must be at most 8192"))
    with pytest.raises(anthropic.BadRequestError, match="must be at most 8192"):
        await sdk.messages.create(
            model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("600", 600.0),
        ("1e308", MAX_CLIENT_TIMEOUT_S),
        ("inf", MAX_CLIENT_TIMEOUT_S),
        ("nan", None),
        ("-5", None),
        ("0", None),
        ("NOT_GIVEN", None),
        (None, None),
    ],
)
def test_a_clients_announced_timeout_is_clamped(header: str | None, expected: float | None) -> None:
    assert client_timeout_s(header) == expected
