"""What is particular to `OpenAIWorker`: chat-completions requests, local servers, stream usage."""

from __future__ import annotations

import pytest
from fakes import FakeOpenAI

from orchestrator.providers.openai import OpenAIWorker
from orchestrator.request import InferenceRequest

from .harness import API_KEY


async def test_request_uses_the_chat_completions_shape(fake_openai: FakeOpenAI) -> None:
    """The system prompt is the first message; the key goes in a bearer header."""
    worker = OpenAIWorker(API_KEY, base_url=fake_openai.api_url, model="gpt-test")
    try:
        await worker.complete(
            InferenceRequest("hi", system="be brief", temperature=0.5), timeout_s=5
        )
    finally:
        await worker.aclose()
    sent = fake_openai.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert sent.body["temperature"] == 0.5


async def test_local_server_needs_no_key_and_gets_max_tokens(fake_openai: FakeOpenAI) -> None:
    """With a base URL (vLLM, llama-server) the key is optional and `max_tokens` is sent."""
    worker = OpenAIWorker(base_url=fake_openai.api_url, model="local")
    try:
        completion = await worker.complete(InferenceRequest("hi", max_tokens=2), timeout_s=5)
    finally:
        await worker.aclose()
    assert completion.text == "Hello from "
    assert fake_openai.requests[0].body["max_tokens"] == 2


async def test_max_completion_tokens_can_be_chosen(fake_openai: FakeOpenAI) -> None:
    """`max_tokens_field='max_completion_tokens'` sends the limit under OpenAI's newer name."""
    worker = OpenAIWorker(
        API_KEY, base_url=fake_openai.api_url, max_tokens_field="max_completion_tokens"
    )
    try:
        await worker.complete(InferenceRequest("hi", max_tokens=7), timeout_s=5)
    finally:
        await worker.aclose()
    body = fake_openai.requests[0].body
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body


async def test_stream_asks_for_usage(fake_openai: FakeOpenAI) -> None:
    """Streams request `stream_options.include_usage` and report the usage chunk's counts."""
    worker = OpenAIWorker(API_KEY, base_url=fake_openai.api_url)
    try:
        chunks = [c async for c in worker.stream(InferenceRequest("two words"), timeout_s=5)]
    finally:
        await worker.aclose()
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.input_tokens, chunks[-1].usage.output_tokens) == (2, 5)


async def test_stream_without_usage_support_still_completes(fake_openai: FakeOpenAI) -> None:
    """A server that sends no usage chunk still yields a complete answer, with usage None."""
    fake_openai.usage_in_stream = False
    worker = OpenAIWorker(base_url=fake_openai.api_url)
    try:
        chunks = [c async for c in worker.stream(InferenceRequest("hi"), timeout_s=5)]
    finally:
        await worker.aclose()
    assert "".join(c.text for c in chunks) == "Hello from the fake upstream."
    assert (chunks[-1].finish_reason, chunks[-1].usage) == ("stop", None)


async def test_stream_usage_can_be_turned_off(fake_openai: FakeOpenAI) -> None:
    """`stream_usage=False` leaves `stream_options` out for servers that reject it."""
    worker = OpenAIWorker(base_url=fake_openai.api_url, stream_usage=False)
    try:
        [c async for c in worker.stream(InferenceRequest("hi"), timeout_s=5)]
    finally:
        await worker.aclose()
    assert "stream_options" not in fake_openai.requests[0].body


def test_openai_itself_needs_a_key() -> None:
    """Without a base URL there is no local server to talk to, so a key is required."""
    with pytest.raises(ValueError, match="api_key"):
        OpenAIWorker()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"api_key": ""}, "api_key"),
        ({"model": ""}, "model"),
        ({"max_tokens_field": "tokens"}, "max_tokens_field"),
        ({"stall_timeout_s": -1}, "stall_timeout_s"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object], name: str) -> None:
    """Bad constructor arguments raise ValueError naming the parameter."""
    arguments: dict[str, object] = {"api_key": API_KEY, **kwargs}
    with pytest.raises(ValueError, match=name):
        OpenAIWorker(**arguments)  # type: ignore[arg-type]
