"""What is particular to `AnthropicWorker`: the Messages API request it sends and its SSE."""

from __future__ import annotations

import aiohttp
import pytest
from fakes import FakeAnthropic

from orchestrator.providers.anthropic import AnthropicWorker
from orchestrator.request import InferenceRequest

from .harness import API_KEY


@pytest.fixture
async def worker(fake_anthropic: FakeAnthropic):
    worker = AnthropicWorker(API_KEY, base_url=fake_anthropic.url, model="claude-test")
    yield worker
    await worker.aclose()


async def test_request_uses_the_messages_api_shape(
    worker: AnthropicWorker, fake_anthropic: FakeAnthropic
) -> None:
    """System goes in `system`, turns in `messages`, the key in the SDK's auth header."""
    await worker.complete(
        InferenceRequest("hi", system="be brief", max_tokens=64, temperature=0.2), timeout_s=5
    )
    sent = fake_anthropic.requests[0]
    assert sent.path == "/v1/messages"
    # This SDK version sends the key as a bearer token; older ones used `x-api-key`.
    sent_keys = {sent.headers.get("x-api-key"), sent.headers.get("Authorization")}
    assert sent_keys & {API_KEY, f"Bearer {API_KEY}"}
    assert "anthropic-version" in sent.headers
    assert sent.body["model"] == "claude-test"
    assert sent.body["system"] == "be brief"
    assert sent.body["messages"] == [{"role": "user", "content": "hi"}]
    assert (sent.body["max_tokens"], sent.body["temperature"]) == (64, 0.2)


async def test_request_model_overrides_the_default(
    worker: AnthropicWorker, fake_anthropic: FakeAnthropic
) -> None:
    """A request that names a model gets that model."""
    completion = await worker.complete(InferenceRequest("hi", model="claude-other"), timeout_s=5)
    assert fake_anthropic.requests[0].body["model"] == "claude-other"
    assert completion.model == "claude-other"


async def test_fake_streams_the_exact_messages_event_sequence(
    fake_anthropic: FakeAnthropic,
) -> None:
    """The fake upstream's SSE events come in the real API's order."""
    body = {"model": "m", "max_tokens": 3, "stream": True, "messages": []}
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake_anthropic.url + "/v1/messages", json=body) as response,
    ):
        text = await response.text()
    events = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event:")
    ]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"api_key": ""}, "api_key"),
        ({"model": ""}, "model"),
        ({"name": ""}, "name"),
        ({"stall_timeout_s": 0}, "stall_timeout_s"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object], name: str) -> None:
    """Bad constructor arguments raise ValueError naming the parameter."""
    arguments: dict[str, object] = {"api_key": API_KEY, **kwargs}
    with pytest.raises(ValueError, match=name):
        AnthropicWorker(**arguments)  # type: ignore[arg-type]
