"""Tools through `/v1/chat/completions` to an Anthropic provider: the OpenAI tool conversation
is translated to the Messages API and the answer back, plain and streamed. Driven by the
official `openai` SDK against the real AnthropicWorker and a fake Anthropic upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from fakes import FakeAnthropic
from fakes.anthropic_api import TOOL_INPUT

from orchestrator import AnthropicWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
ASK: list[Any] = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "open main"},
]


class Served:
    def __init__(self, upstream: FakeAnthropic, pipeline: Pipeline, url: str) -> None:
        self.upstream, self.pipeline = upstream, pipeline
        self.sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with FakeAnthropic(reply="Let me look.") as upstream:
        worker = AnthropicWorker("sk-upstream", base_url=upstream.url, model="claude-fake")
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            served = Served(upstream, pipeline, url)
            yield served
            await served.sdk.close()


async def test_a_tool_call_round_trip_goes_through_the_messages_api(served: Served) -> None:
    """The tool offered reaches the upstream as an Anthropic tool; its tool_use comes back as
    a tool_calls entry; the tool's output goes back as a tool_result, and the final answer
    is text."""
    first = await served.sdk.chat.completions.create(
        model="claude-fake", messages=ASK, tools=TOOLS, tool_choice="auto", user="agent-1"
    )
    sent = served.upstream.requests[0].body
    assert sent["system"] == "You are a coding agent."
    assert sent["tools"] == [
        {"name": "read_file", "description": "Read a file",
         "input_schema": TOOLS[0]["function"]["parameters"]}
    ]
    opening = {"role": "user", "content": [{"type": "text", "text": "open main"}]}
    assert sent["messages"] == [opening]
    assert sent["metadata"] == {"user_id": "agent-1"}
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "read_file"
    assert json.loads(call.function.arguments) == TOOL_INPUT
    second = await served.sdk.chat.completions.create(
        model="claude-fake",
        tools=TOOLS,
        messages=[
            *ASK,
            {"role": "assistant", "content": choice.message.content,
             "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "print('hi')"},
        ],
    )
    follow_up = served.upstream.requests[1].body["messages"]
    assert follow_up[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": call.id, "name": "read_file", "input": TOOL_INPUT},
        ],
    }
    assert follow_up[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "print('hi')"}],
    }
    assert second.choices[0].finish_reason == "stop"
    assert not second.choices[0].message.tool_calls and second.choices[0].message.content
    assert served.pipeline.snapshot().upstream_calls == 2


async def test_a_streamed_tool_call_arrives_as_tool_call_deltas(served: Served) -> None:
    """stream=True: the text streams as content, the tool_use as a tool_calls delta with its
    id and name and then its JSON arguments in pieces, the finish reason, then usage."""
    stream = await served.sdk.chat.completions.create(
        model="claude-fake", messages=ASK, tools=TOOLS, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert served.upstream.requests[0].body["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == "Let me look."
    assert calls[0].id and calls[0].function.name == "read_file"
    arguments = "".join(t.function.arguments or "" for t in calls)
    assert json.loads(arguments) == TOOL_INPUT and {t.index for t in calls} == {0}
    assert [f for f in finishes if f] == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


async def test_a_forced_tool_becomes_anthropics_tool_choice(served: Served) -> None:
    """tool_choice naming a function (parallel calls off) is Anthropic's `tool` choice."""
    await served.sdk.chat.completions.create(
        model="claude-fake", messages=ASK, tools=TOOLS, parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "read_file"}},
    )
    assert served.upstream.requests[0].body["tool_choice"] == {
        "type": "tool", "name": "read_file", "disable_parallel_tool_use": True
    }
