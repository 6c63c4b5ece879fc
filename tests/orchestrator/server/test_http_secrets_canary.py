"""A secrets canary: with recognisable fake provider keys, each key reaches its upstream and
nothing else — no response (body or header, failures included, even when the upstream echoes
the key in its error), no log line at DEBUG, no `/v1/status`, no `/metrics`, no agent
environment."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fakes import Fail, FakeAnthropic, FakeOpenAI, StreamError

from coordinator.traffic import agent_env
from orchestrator import AnthropicWorker, OpenAIWorker, Pipeline, PipelineConfig, Tunables
from orchestrator.server import ServerTask, create_app

ANTHROPIC_KEY = "sk-ant-CANARY-3b9f1e0d7c5a"
OPENAI_KEY = "sk-CANARY-openai-8e2d4a6c0f1b"
KEYS = (ANTHROPIC_KEY, OPENAI_KEY)
TOOLS = [{"name": "read_file", "input_schema": {"type": "object"}}]


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[_Everything]:
    """Every log record of every logger, at DEBUG, formatted with its traceback."""
    handler = _Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeAnthropic, FakeOpenAI, str]]:
    async with FakeAnthropic() as anthropic_up, FakeOpenAI() as openai_up:
        pipeline = Pipeline(
            PipelineConfig(tunables=Tunables(retry_max_attempts=1)),
            AnthropicWorker(ANTHROPIC_KEY, base_url=anthropic_up.url, model="claude-sonnet-5-5"),
            OpenAIWorker(OPENAI_KEY, base_url=openai_up.api_url, model="gpt-5.4-mini"),
        )
        async with ServerTask(create_app(pipeline)) as url:
            yield anthropic_up, openai_up, url


def _seen(response: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status_code}\n{headers}\n{response.text}"


async def test_provider_keys_reach_their_upstream_and_nothing_else(
    served: tuple[FakeAnthropic, FakeOpenAI, str], logs: _Everything
) -> None:
    """Answers, streams and failures (the upstream echoing the key in 401, 429 and 500 error
    bodies and in a mid-stream error) leak neither key anywhere a client or operator sees."""
    anthropic_up, openai_up, url = served
    # The upstream echoes the key back in another case too: masking must not be exact-match.
    anthropic_up.fail_next(
        Fail(status=401, message=f"invalid x-api-key {ANTHROPIC_KEY.lower()}"),
        Fail(status=429, retry_after="0", message=f"slow down {ANTHROPIC_KEY.upper()}"),
    )
    openai_up.fail_next(
        Fail(status=500, message=f"boom for {OPENAI_KEY.swapcase()}"),
        StreamError(after_chunks=1, status=500, message=f"cut for {OPENAI_KEY}"),
    )
    message: dict[str, Any] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
    }
    responses: dict[str, Any] = {"model": "gpt-5.4-mini", "input": "hello"}
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(2):  # the two failures, then answers
            seen.append(_seen(await client.post("/v1/messages", json=message)))
        seen.append(_seen(await client.post("/v1/messages", json={**message, "tools": TOOLS})))
        seen.append(_seen(await client.post("/v1/messages", json={**message, "stream": True})))
        seen.append(_seen(await client.post("/v1/messages/count_tokens", json=message)))
        seen.append(_seen(await client.post("/v1/responses", json=responses)))
        seen.append(_seen(await client.post("/v1/responses", json={**responses, "stream": True})))
        seen.append(_seen(await client.post("/v1/responses", json={**responses, "stream": True})))
        seen.append(_seen(await client.get("/v1/status")))
        seen.append(_seen(await client.get("/metrics")))
    # The keys did reach their upstreams, each only its own.
    assert all(ANTHROPIC_KEY in str(dict(r.headers)) for r in anthropic_up.requests)
    assert all(OPENAI_KEY in str(dict(r.headers)) for r in openai_up.requests)
    assert not any(OPENAI_KEY in str(dict(r.headers)) for r in anthropic_up.requests)
    assert anthropic_up.request_count >= 5 and openai_up.request_count >= 3
    statuses = [s.split("\n")[0] for s in seen]
    assert statuses[0] != "200" and statuses[5] != "200"  # the upstream failures came back
    everything = "\n".join([*seen, *logs.lines, *agent_env(url).values()]).lower()
    for key in KEYS:
        assert key.lower() not in everything
        assert key[-12:].lower() not in everything  # not even its tail
    # Clients get a generic message for upstream 401/429/5xx, not the upstream's own text.
    for text in ("invalid x-api-key", "slow down", "boom for", "cut for"):
        assert text not in "\n".join(seen)
