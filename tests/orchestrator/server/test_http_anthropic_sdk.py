"""The Anthropic Messages API door, driven by the official `anthropic` SDK."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import pytest
from conftest import FailsMidStream, PricedEcho, echo_pipeline
from fakes import FakeAnthropic
from pipeline_fakes import ScriptedWorker

from orchestrator import AnthropicWorker, Pipeline, PipelineConfig
from orchestrator.errors import ProviderError
from orchestrator.server import ServerTask, create_app
from orchestrator.server.bodies import CACHE_HEADER


def client(url: str, **kwargs: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, **kwargs)


def test_messages_create_returns_the_answer_and_usage(start_server: Callable[..., str]) -> None:
    """messages.create gets the pipeline's answer as one text block with its token usage."""
    url = start_server()
    message = client(url).messages.create(
        model="echo",
        max_tokens=64,
        system="Answer briefly.",
        messages=[{"role": "user", "content": "the quick brown fox"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "the quick brown fox"
    assert message.role == "assistant" and message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0


def test_messages_stream_yields_text_deltas_and_final_usage(
    start_server: Callable[..., str],
) -> None:
    """messages.stream delivers the answer as text deltas; the final message carries usage."""
    url = start_server()
    with client(url).messages.stream(
        model="echo",
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
    ) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(deltas) == 3 and "".join(deltas) == "one two three"
    assert final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_a_streamed_answer_from_the_cache_says_so_in_its_headers(
    start_server: Callable[..., str],
) -> None:
    """A repeated streamed request is answered from the cache and marked as a JSON answer is
    (`x-orchestrator-cache: exact`); the first, made upstream, is not."""
    url = start_server()
    headers = []
    for _ in range(2):
        with client(url).messages.with_streaming_response.create(
            model="echo",
            max_tokens=64,
            messages=[{"role": "user", "content": "stream me twice"}],
            stream=True,
        ) as response:
            headers.append(response.headers)
            events = list(response.iter_lines())
        assert any("twice" in line for line in events)
    assert CACHE_HEADER not in headers[0]
    assert headers[1][CACHE_HEADER] == "exact"


def test_system_blocks_and_user_id_reach_the_pipeline(start_server: Callable[..., str]) -> None:
    """System text blocks become the system prompt; metadata.user_id becomes the session."""
    worker = ScriptedWorker(model="echo")
    url = start_server(echo_pipeline(worker))
    client(url).messages.create(
        model="echo",
        max_tokens=16,
        system=[{"type": "text", "text": "You are "}, {"type": "text", "text": "terse."}],
        metadata={"user_id": "agent-7"},
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        extra_body={"temperature": 0.2},  # this SDK version has no temperature parameter
    )
    (request,) = worker.requests
    assert request.system == "You are terse."
    assert request.session_id == "agent-7"
    assert request.temperature == 0.2 and request.max_tokens == 16
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "again"),
    ]


def test_the_clients_own_timeout_is_the_requests_deadline(
    start_server: Callable[..., str],
) -> None:
    """The timeout the SDK announces (X-Stainless-Timeout; Claude Code's is 600 s) becomes the
    request's deadline; without a usable one, the pipeline's default applies."""
    worker = ScriptedWorker(model="echo")
    url = start_server(echo_pipeline(worker))
    sdk = client(url)
    sdk.messages.create(
        model="echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}], timeout=600
    )
    sdk.messages.create(
        model="echo",
        max_tokens=16,
        messages=[{"role": "user", "content": "again"}],
        extra_headers={"x-stainless-timeout": "NOT_GIVEN"},
    )
    assert [r.timeout_s for r in worker.requests] == [600, None]


def test_tools_are_refused_with_a_400_naming_the_field(start_server: Callable[..., str]) -> None:
    """A request the pipeline cannot carry (tool use) is refused, naming `tools`."""
    url = start_server()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(url).messages.create(
            model="echo",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "ls", "input_schema": {"type": "object"}}],
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert "tools" in body["error"]["message"]


def test_a_missing_field_is_a_400_in_anthropic_shape(start_server: Callable[..., str]) -> None:
    """A body without max_tokens gets Anthropic's error JSON naming max_tokens."""
    url = start_server()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(url).post(
            "/v1/messages",
            body={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            cast_to=object,
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error" and "max_tokens" in body["error"]["message"]


def test_a_budget_refusal_is_a_402_billing_error(start_server: Callable[..., str]) -> None:
    """A request that would cross the global budget answers 402 `billing_error`."""
    pipeline = Pipeline(PipelineConfig(global_budget_usd=1e-9), PricedEcho(model="claude-opus-4-1"))
    url = start_server(pipeline)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(url).messages.create(
            model="claude-opus-4-1", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 402
    assert caught.value.body["error"]["type"] == "billing_error"  # type: ignore[index]


def test_an_upstream_rejection_keeps_its_status(start_server: Callable[..., str]) -> None:
    """A provider's non-retryable 400 reaches the SDK as a 400, not a 500."""
    worker = ScriptedWorker(
        script=[ProviderError("scripted", "model 'x' not found", status=400, retryable=False)]
    )
    url = start_server(echo_pipeline(worker))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(url).messages.create(
            model="x", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert "not found" in str(caught.value)


async def test_sdk_traffic_reaches_a_real_anthropic_upstream_through_the_pipeline() -> None:
    """The async SDK → this server → AnthropicWorker → an Anthropic-speaking upstream."""
    async with FakeAnthropic(reply="Hello from upstream") as upstream:
        worker = AnthropicWorker("sk-upstream", base_url=upstream.url, model="claude-fake")
        app = create_app(Pipeline(PipelineConfig(), worker))
        async with ServerTask(app) as url:
            sdk = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)
            message = await sdk.messages.create(
                model="claude-fake", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
            )
            async with sdk.messages.stream(
                model="claude-fake", max_tokens=32, messages=[{"role": "user", "content": "yo"}]
            ) as stream:
                streamed = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            await sdk.close()
    assert message.content[0].text == "Hello from upstream"  # type: ignore[union-attr]
    assert message.usage.output_tokens == 3
    assert "".join(streamed) == "Hello from upstream" and len(streamed) == 3
    assert final.usage.output_tokens == 3 and final.usage.input_tokens == 1
    assert upstream.request_count == 2


def test_an_error_mid_stream_reaches_the_sdk_as_an_error_event(
    start_server: Callable[..., str],
) -> None:
    """After the first chunk, a failure arrives as Anthropic's `error` event; the SDK raises."""
    url = start_server(echo_pipeline(FailsMidStream()))
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError, match=r"failed \(HTTP 500\)"),
        client(url).messages.stream(
            model="echo", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        received.extend(stream.text_stream)
    assert received == ["partial "]


def test_a_refusal_before_streaming_is_an_http_status(start_server: Callable[..., str]) -> None:
    """A streamed request refused before its first chunk gets the refusal's HTTP status."""
    pipeline = Pipeline(PipelineConfig(global_budget_usd=1e-9), PricedEcho(model="claude-opus-4-1"))
    url = start_server(pipeline)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client(url).messages.stream(
            model="claude-opus-4-1", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        stream.get_final_message()
    assert caught.value.status_code == 402
