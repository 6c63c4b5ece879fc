"""Native passthrough on `/v1/messages`: what the text path cannot carry (tools, tool_use and
tool_result blocks, cache_control, …) goes through the pipeline to the real AnthropicWorker
and back unchanged. Driven by the official `anthropic` SDK against a fake Anthropic upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import pytest
from fakes import FakeAnthropic, StreamError
from fakes.anthropic_api import TOOL_INPUT
from fakes.upstream import count_words

from orchestrator import AnthropicWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app
from orchestrator.server.anthropic_api import TOKEN_COUNT_HEADER

TOOLS: list[Any] = [
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "lines": {"type": "array"}},
            "required": ["path"],
        },
        "cache_control": {"type": "ephemeral"},
    }
]
SYSTEM: list[Any] = [
    {"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}
]
ASK: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "open main"}]}]


class Served:
    """A server whose pipeline uses the real AnthropicWorker pointed at a fake upstream."""

    def __init__(self, upstream: FakeAnthropic, pipeline: Pipeline, url: str) -> None:
        self.upstream, self.pipeline = upstream, pipeline
        self.sdk = anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with FakeAnthropic(reply="Let me look.") as upstream:
        worker = AnthropicWorker("sk-upstream", base_url=upstream.url, model="claude-fake")
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            served = Served(upstream, pipeline, url)
            yield served
            await served.sdk.close()


async def test_a_tools_request_reaches_the_upstream_verbatim_and_returns_tool_use(
    served: Served,
) -> None:
    """Tools, system blocks with cache_control and the beta header reach the upstream as sent;
    the client gets the upstream's message, tool_use block included, unchanged."""
    message = await served.sdk.messages.create(
        model="claude-fake",
        max_tokens=256,
        system=SYSTEM,
        tools=TOOLS,
        tool_choice={"type": "auto"},
        messages=ASK,
        extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
        extra_body={"context_management": {"edits": []}},
    )
    (received,) = served.upstream.requests
    assert received.body["tools"] == TOOLS and received.body["system"] == SYSTEM
    assert received.body["messages"] == ASK and received.body["tool_choice"] == {"type": "auto"}
    assert received.body["context_management"] == {"edits": []}  # unknown to us: kept
    assert "stream" not in received.body
    assert received.headers["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14"
    assert message.id == "msg_fake_1" and message.stop_reason == "tool_use"
    text, tool = message.content
    assert text.type == "text" and text.text == "Let me look."
    assert tool.type == "tool_use" and tool.name == "read_file" and tool.input == TOOL_INPUT


async def test_a_tool_result_follow_up_is_answered(served: Served) -> None:
    """The turn after a tool call (assistant tool_use, user tool_result) is passed through."""
    conversation: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": TOOL_INPUT}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print('hi')"}
            ],
        },
    ]
    message = await served.sdk.messages.create(
        model="claude-fake", max_tokens=256, tools=TOOLS, messages=conversation
    )
    (received,) = served.upstream.requests
    assert received.body["messages"] == conversation
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]


async def test_messages_stream_yields_the_tool_use_with_its_json_input(served: Served) -> None:
    """messages.stream sees the upstream's events, input_json_delta included, under their own
    names: the text streams and the final message holds the tool_use with its parsed input."""
    async with served.sdk.messages.stream(
        model="claude-fake", max_tokens=256, system=SYSTEM, tools=TOOLS, messages=ASK
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    (received,) = served.upstream.requests
    assert received.body["stream"] is True and received.body["tools"] == TOOLS
    assert kinds.count("input_json") == 2  # the SDK's event for each input_json_delta
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.id == "msg_fake_1" and final.stop_reason == "tool_use"
    text, tool = final.content
    assert text.type == "text" and text.text == "Let me look."
    assert tool.type == "tool_use" and tool.input == TOOL_INPUT
    assert final.usage.output_tokens == 3


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("stream", [False, True])
async def test_identical_concurrent_native_requests_make_one_upstream_call(
    served: Served, stream: bool
) -> None:
    """Five agents sending the same tools request at once: one upstream call, and each gets
    the whole message (streams: every raw event)."""

    async def ask() -> anthropic.types.Message:
        params: dict[str, Any] = {
            "model": "claude-fake",
            "max_tokens": 256,
            "system": SYSTEM,
            "tools": TOOLS,
            "messages": ASK,
        }
        if not stream:
            return await served.sdk.messages.create(**params)
        async with served.sdk.messages.stream(**params) as events:
            return await events.get_final_message()

    served.upstream.hold()
    calls = [asyncio.create_task(ask()) for _ in range(5)]
    await _until(lambda: served.pipeline.coalescer.hits == 4)
    served.upstream.release()
    messages = await asyncio.gather(*calls)
    assert served.upstream.request_count == 1
    for message in messages:
        assert message.id == "msg_fake_1"
        assert message.content[1].type == "tool_use"
        assert message.content[1].input == TOOL_INPUT


async def test_a_native_request_is_cached_whole(served: Served) -> None:
    """Asked again after it was answered, a native request is served from the cache, whole."""
    first = await served.sdk.messages.create(
        model="claude-fake", max_tokens=256, tools=TOOLS, messages=ASK
    )
    again = await served.sdk.messages.create(
        model="claude-fake", max_tokens=256, tools=TOOLS, messages=ASK
    )
    assert served.upstream.request_count == 1
    assert again.model_dump() == first.model_dump()


def test_a_native_request_without_an_anthropic_provider_is_a_400_naming_the_field(
    start_server: Callable[..., str],
) -> None:
    """With only the echo provider, an image block is refused with a 400 naming the field."""
    url = start_server()
    sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model="echo", max_tokens=16, messages=[{"role": "user", "content": [image]}]
        )
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert message.startswith("messages[0].content[0].type:")
    assert "anthropic provider" in message


def test_cache_control_alone_is_still_served_as_text_by_echo(
    start_server: Callable[..., str],
) -> None:
    """Without an Anthropic provider, a text request whose only extra is cache_control is
    served on the text path, as before (the hint cannot change the answer)."""
    url = start_server()
    sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    message = sdk.messages.create(
        model="echo",
        max_tokens=16,
        system=SYSTEM,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    )
    assert message.content[0].type == "text" and message.content[0].text == "hi"


async def test_count_tokens_is_the_anthropic_providers_own_count(served: Served) -> None:
    """count_tokens is forwarded to the Anthropic upstream, tools and all, and its count
    returned; nothing marks it as an estimate."""
    raw = await served.sdk.messages.with_raw_response.count_tokens(
        model="claude-fake", system=SYSTEM, tools=TOOLS, messages=ASK
    )
    counted = await raw.parse()
    (received,) = served.upstream.requests
    assert received.path == "/v1/messages/count_tokens"
    assert received.body["tools"] == TOOLS and received.body["messages"] == ASK
    assert counted.input_tokens == count_words(str(ASK[0]["content"]))  # the fake's count
    assert TOKEN_COUNT_HEADER not in raw.headers


def test_count_tokens_without_an_anthropic_provider_is_an_estimate_and_says_so(
    start_server: Callable[..., str],
) -> None:
    """With only echo, count_tokens answers the pipeline's estimate, marked in a header."""
    url = start_server()
    sdk = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    raw = sdk.messages.with_raw_response.count_tokens(
        model="echo", system=SYSTEM, tools=TOOLS, messages=ASK
    )
    assert raw.headers[TOKEN_COUNT_HEADER] == "estimated"
    assert raw.parse().input_tokens > 0


async def test_an_upstream_error_mid_stream_reaches_the_client_as_an_error_event(
    served: Served,
) -> None:
    """An overloaded_error after the first text delta arrives as an `error` event (the SDK
    raises), once: a stream that has started is never retried."""
    served.upstream.fail_next(StreamError(status=529, message="overloaded", after_chunks=1))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError, match="overloaded"):
        async with served.sdk.messages.stream(
            model="claude-fake", max_tokens=256, tools=TOOLS, messages=ASK
        ) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert received == ["Let "]
    assert served.upstream.request_count == 1
