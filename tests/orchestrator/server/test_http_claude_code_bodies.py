"""What Claude Code 2.1 sends, as captured from the real CLI, through `/v1/messages`: system-role
messages, fields on messages, its billing line and per-run user id, its headers and retries.
Driven by raw HTTP (the bodies are Claude Code's, not the SDK's) and the official `anthropic`
SDK, against the real AnthropicWorker and a fake Anthropic upstream."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import httpx
import pytest
from fakes import Fail, FakeAnthropic

from orchestrator import AnthropicWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app

# The shape of Claude Code's first request (trimmed): the billing line as system[0], system
# turns in messages[] (its agent and skill lists), per-turn `output_config` on a message.
CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-opus-5-5",
    "max_tokens": 128000,
    "stream": False,
    "system": [
        {
            "type": "text",
            "text": "x-anthropic-billing-header: cc_version=2.1.332.0b8; cc_entrypoint=sdk-cli;",
        },
        {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
        {
            "role": "system",
            "content": [{"type": "text", "text": "# Environment\nPlatform: linux"}],
            "output_config": {"effort": "medium"},
        },
    ],
    "tools": [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}],
    "metadata": {
        "user_id": json.dumps(
            {"device_id": "d1", "account_uuid": "", "session_id": "c7807329-64cc-469c"}
        )
    },
    "thinking": {"type": "adaptive", "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "medium"},
}
HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "x-stainless-retry-count": "0",
    "x-api-key": "sk-ant-client-placeholder",
}


class Served:
    def __init__(self, upstream: FakeAnthropic, pipeline: Pipeline, url: str) -> None:
        self.upstream, self.pipeline, self.url = upstream, pipeline, url
        self.http = httpx.AsyncClient(base_url=url, timeout=10)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with FakeAnthropic(reply="Hi there.") as upstream:
        worker = AnthropicWorker("sk-upstream", base_url=upstream.url, model="claude-fake")
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            served = Served(upstream, pipeline, url)
            yield served
            await served.http.aclose()


def _body(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(CLAUDE_CODE_BODY)
    body.update(changes)
    return body


async def test_claude_codes_first_request_reaches_the_upstream_as_it_was_sent(
    served: Served,
) -> None:
    """System-role messages, message fields, thinking, context_management: the upstream gets
    the body byte-for-byte equal as JSON, and the client gets the upstream's message."""
    response = await served.http.post("/v1/messages?beta=true", json=_body(), headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "Hi there."
    (received,) = served.upstream.requests
    assert received.body == {k: v for k, v in CLAUDE_CODE_BODY.items() if k != "stream"}


async def test_the_clients_anthropic_version_and_beta_headers_are_forwarded(
    served: Served,
) -> None:
    """The upstream sees the client's anthropic-version and anthropic-beta, not the SDK's."""
    headers = {**HEADERS, "anthropic-version": "2099-01-01"}
    response = await served.http.post("/v1/messages", json=_body(), headers=headers)
    assert response.status_code == 200, response.text
    (received,) = served.upstream.requests
    assert received.headers["anthropic-version"] == "2099-01-01"
    assert received.headers["anthropic-beta"] == HEADERS["anthropic-beta"]


async def test_count_tokens_forwards_claude_codes_body_as_it_was_sent(served: Served) -> None:
    """count_tokens with system-role messages reaches the upstream unchanged and answers."""
    body = {k: v for k, v in CLAUDE_CODE_BODY.items() if k not in ("max_tokens", "stream")}
    response = await served.http.post("/v1/messages/count_tokens", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 0
    (received,) = served.upstream.requests
    assert received.path == "/v1/messages/count_tokens" and received.body == body


async def test_a_native_stream_carries_the_upstreams_pings(served: Served) -> None:
    """The raw event stream the client reads includes the upstream's `ping` event."""
    async with served.http.stream(
        "POST", "/v1/messages", json=_body(stream=True), headers=HEADERS
    ) as response:
        text = (await response.aread()).decode()
    lines = text.splitlines()
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event:")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-1] == "message_stop"


def test_the_text_path_takes_system_role_messages(start_server: Callable[..., str]) -> None:
    """With the echo provider, a plain conversation with a system turn is answered as text."""
    url = start_server()
    body = {
        "model": "echo",
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello echo"},
        ],
    }
    response = httpx.post(f"{url}/v1/messages", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "hello echo"


@pytest.mark.parametrize("stream", [False, True])
async def test_two_runs_differing_in_user_id_and_billing_line_make_one_upstream_call(
    served: Served, stream: bool
) -> None:
    """Two Claude Code runs (different builds, different sessions) asking the same thing at
    once coalesce: the key ignores metadata.user_id and the billing line in system[0]."""
    other = _body(stream=stream)
    other["metadata"] = {"user_id": json.dumps({"device_id": "d2", "session_id": "another"})}
    other["system"][0]["text"] = (
        "x-anthropic-billing-header: cc_version=2.1.333.9ff; cc_entrypoint=cli;"
    )

    async def ask(body: dict[str, Any]) -> httpx.Response:
        response = await served.http.post("/v1/messages", json=body, headers=HEADERS)
        await response.aread()
        return response

    served.upstream.hold()
    calls = [asyncio.create_task(ask(_body(stream=stream))), asyncio.create_task(ask(other))]
    async with asyncio.timeout(5):
        while served.pipeline.coalescer.hits < 1:
            await asyncio.sleep(0.005)
    served.upstream.release()
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200, 200]
    assert served.upstream.request_count == 1


async def test_a_different_question_is_not_coalesced(served: Served) -> None:
    """Only those two fields are ignored: a different system prompt makes its own call."""
    other = _body()
    other["system"][1]["text"] = "You are a different agent."
    await served.http.post("/v1/messages", json=_body(), headers=HEADERS)
    await served.http.post("/v1/messages", json=other, headers=HEADERS)
    assert served.upstream.request_count == 2


async def test_a_529_upstream_reaches_the_client_as_529(served: Served) -> None:
    """The upstream's 529 overloaded_error comes back as 529 (not 502), with its Retry-After."""
    served.upstream.fail_next(Fail(status=529, message="Overloaded", retry_after="3"))
    response = await served.http.post("/v1/messages", json=_body(), headers=HEADERS)
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"
    assert response.headers["retry-after"] == "3"


async def test_a_client_that_retries_itself_gets_the_429_at_once(served: Served) -> None:
    """With x-stainless-retry-count sent, a 429 goes back after one upstream call, with its
    Retry-After, for the client's own retry; the breaker stays closed."""
    served.upstream.fail_next(Fail(status=429, message="slow down", retry_after="2"))
    response = await served.http.post("/v1/messages", json=_body(), headers=HEADERS)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert served.upstream.request_count == 1
    assert served.pipeline.snapshot().providers[0].breaker_state == "closed"


async def test_without_client_retries_the_gateway_retries_a_429_itself(served: Served) -> None:
    """A client that does not retry (no x-stainless-retry-count) gets the gateway's retry."""
    served.upstream.fail_next(Fail(status=429, message="slow down", retry_after="0.05"))
    headers = {k: v for k, v in HEADERS.items() if k != "x-stainless-retry-count"}
    response = await served.http.post("/v1/messages", json=_body(), headers=headers)
    assert response.status_code == 200, response.text
    assert served.upstream.request_count == 2


async def test_the_sdks_retries_are_not_multiplied_by_the_gateways(served: Served) -> None:
    """The Anthropic SDK with 2 retries against a provider that keeps answering 429 makes 3
    upstream calls in all (its own tries), not 3 × the gateway's attempts."""
    served.upstream.fail_always(Fail(status=429, message="slow down", retry_after="0"))
    sdk = anthropic.AsyncAnthropic(base_url=served.url, api_key="unused", max_retries=2)
    with pytest.raises(anthropic.RateLimitError):
        await sdk.messages.create(
            model="claude-fake", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    await sdk.close()
    assert served.upstream.request_count == 3


async def test_cache_reads_and_writes_are_billed(served: Served) -> None:
    """Usage with cache_read/cache_creation tokens is billed for all of them."""
    served.upstream.cache_usage = {
        "cache_read_input_tokens": 1_000_000,
        "cache_creation_input_tokens": 1_000_000,
    }
    response = await served.http.post(
        "/v1/messages", json=_body(model="claude-sonnet-5-5"), headers=HEADERS
    )
    assert response.status_code == 200, response.text
    cost = served.pipeline.snapshot().cost_usd_total
    # claude-sonnet-5: $3/M input → cache reads $0.30/M, cache writes $3.75/M
    assert cost == pytest.approx(0.30 + 3.75, rel=0.01)


async def test_openai_sdk_retries_on_chat_completions_are_not_multiplied_either(
    served: Served,
) -> None:
    """The OpenAI SDK announces its own retries on /v1/chat/completions too: with 2 retries
    against an upstream that keeps answering 429, 3 upstream calls in all, then its 429."""
    import openai

    served.upstream.fail_always(Fail(status=429, message="slow down", retry_after="0"))
    sdk = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=2)
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(
            model="claude-fake", messages=[{"role": "user", "content": "hi"}]
        )
    await sdk.close()
    assert served.upstream.request_count == 3
    assert served.pipeline.snapshot().providers[0].breaker_state == "closed"
