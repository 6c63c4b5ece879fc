"""What is particular to `OpenAIWorker`: chat-completions requests, local servers, stream usage,
native Responses API bodies."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from fakes import FakeOpenAI

from orchestrator.errors import ProviderError
from orchestrator.providers.openai import OpenAIWorker
from orchestrator.request import NATIVE_FORMAT, NATIVE_OPENAI_RESPONSES, InferenceRequest

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


def _responses_request(**body: object) -> InferenceRequest:
    native = {"model": "gpt-test", "input": "open main", **body}
    return InferenceRequest(
        "open main", native=native, metadata={NATIVE_FORMAT: NATIVE_OPENAI_RESPONSES}
    )


async def test_a_native_responses_body_goes_to_responses_and_bills_cached_input(
    fake_openai: FakeOpenAI,
) -> None:
    """A native Responses body is POSTed to /v1/responses as given; the answer comes back as
    sent, and cached input tokens are billed as cache reads, not as fresh input."""
    fake_openai.cached_tokens = 100
    worker = OpenAIWorker(API_KEY, base_url=fake_openai.api_url)
    try:
        completion = await worker.complete(_responses_request(store=False), timeout_s=5)
    finally:
        await worker.aclose()
    (sent,) = fake_openai.requests
    assert sent.path == "/v1/responses" and sent.body["store"] is False
    assert completion.native is not None and completion.native["id"] == "resp_fake_1"
    assert completion.text == "Hello from the fake upstream."
    assert completion.usage.cache_read_input_tokens == 100
    assert completion.usage.input_tokens == 2  # "open main": the words, without the cached


async def test_a_native_responses_stream_yields_every_event_then_the_usage(
    fake_openai: FakeOpenAI,
) -> None:
    """Streamed, each upstream event is one chunk (text deltas carry their text); the last is
    response.completed with the finish reason and usage."""
    worker = OpenAIWorker(API_KEY, base_url=fake_openai.api_url)
    try:
        chunks = [c async for c in worker.stream(_responses_request(), timeout_s=5)]
    finally:
        await worker.aclose()
    kinds = [c.native["type"] for c in chunks if c.native is not None]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(c.text for c in chunks) == "Hello from the fake upstream."
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert chunks[-1].usage.output_tokens == 5


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [("rate_limit_exceeded", 429, True), ("server_error", 500, True),
     ("invalid_prompt", 400, False)],
)
async def test_a_failed_response_event_is_a_provider_error_with_its_status(
    code: str, status: int, retryable: bool
) -> None:
    """`response.failed` inside a 200 stream raises a ProviderError with the status its error
    code stands for."""
    failed = {
        "type": "response.failed",
        "response": {"id": "r", "status": "failed", "error": {"code": code, "message": "no"}},
    }
    body = f"event: response.failed\ndata: {json.dumps(failed)}\n\n".encode()

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(body)
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    worker = OpenAIWorker(API_KEY, base_url=f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ProviderError) as caught:
            _ = [c async for c in worker.stream(_responses_request(), timeout_s=5)]
    finally:
        await worker.aclose()
        await runner.cleanup()
    assert caught.value.status == status and caught.value.retryable is retryable
