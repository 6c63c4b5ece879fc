"""Tools through `/v1/chat/completions` to the llama.cpp provider, driven by the official
`openai` SDK: the body goes natively to llama-server's OpenAI-compatible
`/v1/chat/completions` (here a fake OpenAI-compatible upstream on 127.0.0.1), which receives
the tools as sent; its tool call comes back unchanged, plain and streamed, and is counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from fakes import FakeOpenAI
from fakes.openai_api import FUNCTION_ARGUMENTS

from orchestrator import Pipeline, PipelineConfig
from orchestrator.providers.llamacpp import LlamaCppWorker
from orchestrator.server import ServerTask, create_app

TOOLS: list[Any] = [
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
]
ASK: list[Any] = [{"role": "user", "content": "open main"}]


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeOpenAI, Pipeline, openai.AsyncOpenAI]]:
    async with FakeOpenAI(reply="Let me look.") as upstream:
        upstream.call_tools = True
        pipeline = Pipeline(PipelineConfig(), LlamaCppWorker(upstream.url, api_key="local-key"))
        async with ServerTask(create_app(pipeline)) as url:
            sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            yield upstream, pipeline, sdk
            await sdk.close()


async def test_tools_reach_llama_servers_chat_endpoint_as_sent(
    served: tuple[FakeOpenAI, Pipeline, openai.AsyncOpenAI],
) -> None:
    """The tools, tool_choice and unknown fields reach `/v1/chat/completions` as sent (with
    llama-server's key); the tool call comes back, then the tool result turn goes the same
    way and is answered."""
    upstream, pipeline, sdk = served
    first = await sdk.chat.completions.create(
        model="qwen", messages=ASK, tools=TOOLS, tool_choice="auto",
        extra_body={"parallel_tool_calls": False},
    )
    (received,) = upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.body["tools"] == TOOLS and received.body["tool_choice"] == "auto"
    assert received.body["parallel_tool_calls"] is False and received.body["messages"] == ASK
    assert received.headers["authorization"] == "Bearer local-key"
    [call] = first.choices[0].message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("read_file", FUNCTION_ARGUMENTS)
    assert first.choices[0].finish_reason == "tool_calls"

    second = await sdk.chat.completions.create(
        model="qwen", tools=TOOLS,
        messages=[*ASK, first.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "print('hi')"}],
    )
    assert upstream.requests[1].body["messages"][-1]["content"] == "print('hi')"
    assert second.choices[0].message.content == "Let me look."
    assert pipeline.snapshot().requests_total == 2 and _output_tokens(pipeline) > 0


async def test_a_streamed_tool_call_comes_back_chunk_for_chunk(
    served: tuple[FakeOpenAI, Pipeline, openai.AsyncOpenAI],
) -> None:
    """Streamed: llama-server's chunks arrive as sent, the tool call's included; the usage
    chunk the gateway asked for (to count tokens) is kept from a client that did not."""
    upstream, pipeline, sdk = served
    stream = await sdk.chat.completions.create(
        model="qwen", messages=ASK, tools=TOOLS, stream=True
    )
    chunks = [chunk async for chunk in stream]
    (received,) = upstream.requests
    assert received.body["tools"] == TOOLS and received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}
    calls = [c for chunk in chunks for c in (chunk.choices[0].delta.tool_calls or [])]
    assert [c.function.name for c in calls if c.function] == ["read_file"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(chunk.choices for chunk in chunks)
    assert _output_tokens(pipeline) > 0


async def test_a_text_request_still_goes_to_completion(
    served: tuple[FakeOpenAI, Pipeline, openai.AsyncOpenAI],
) -> None:
    """Without tools the body is text and goes through the chat template to `/completion`
    (which this upstream does not serve: the request fails there, not at the chat route)."""
    upstream, _, sdk = served
    with pytest.raises(openai.APIStatusError):
        await sdk.chat.completions.create(model="qwen", messages=ASK)
    assert all(r.path != "/v1/chat/completions" for r in upstream.requests)


def _output_tokens(pipeline: Pipeline) -> int:
    """The output tokens the usage ledger counted, over every model."""
    by_model = pipeline.snapshot().usage["by_model"]
    return sum(int(totals["output_tokens"]) for totals in by_model.values())
