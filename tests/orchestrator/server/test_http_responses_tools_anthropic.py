"""Tools through `/v1/responses` to an Anthropic provider: the Responses input items are
translated to the Messages API and the answer back as `function_call` and `message` output
items, plain and streamed. Driven by the official `openai` SDK against the real
AnthropicWorker and a fake Anthropic upstream."""

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
        "name": "read_file",
        "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        "strict": False,
    }
]
ASK: list[Any] = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "open main"}]},
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
    a function_call output item; the call and its output go back as tool_use and
    tool_result blocks, and the final answer is text."""
    first = await served.sdk.responses.create(
        model="claude-fake", instructions="You are a coding agent.", input=ASK, tools=TOOLS,
        prompt_cache_key="thread-1",
    )
    sent = served.upstream.requests[0].body
    assert sent["system"] == "You are a coding agent."
    assert sent["tools"] == [{"name": "read_file", "description": "Read a file",
                              "input_schema": TOOLS[0]["parameters"]}]
    opening = {"role": "user", "content": [{"type": "text", "text": "open main"}]}
    assert sent["messages"] == [opening]
    assert first.status == "completed" and first.output_text == "Let me look."
    message, call = first.output
    assert message.type == "message" and call.type == "function_call"
    assert call.name == "read_file" and call.call_id.startswith("toolu_")
    assert json.loads(call.arguments) == TOOL_INPUT
    assert first.usage is not None and first.usage.output_tokens > 0
    second = await served.sdk.responses.create(
        model="claude-fake",
        tools=TOOLS,
        input=[
            *ASK,
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "print('hi')"},
        ],
    )
    follow_up = served.upstream.requests[1].body["messages"]
    assert follow_up[1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": call.call_id, "name": "read_file", "input": TOOL_INPUT},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.call_id, "content": "print('hi')"},
        ]},
    ]
    assert [item.type for item in second.output] == ["message"] and second.output_text
    assert served.pipeline.snapshot().upstream_calls == 2


async def test_a_streamed_tool_call_arrives_as_function_call_events(served: Served) -> None:
    """stream=True: the text as output_text deltas of a message item, the tool_use as a
    function_call item with its arguments in deltas, then response.completed with usage."""
    stream = await served.sdk.responses.create(
        model="claude-fake", input=ASK, tools=TOOLS, stream=True
    )
    events = [event async for event in stream]
    assert served.upstream.requests[0].body["stream"] is True
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Let me look."
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert json.loads("".join(pieces)) == TOOL_INPUT
    (args_done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(args_done.arguments) == TOOL_INPUT
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["message", "function_call"]
    final = events[-1].response
    message, call = final.output
    assert message.type == "message" and call.type == "function_call" and call.name == "read_file"
    assert json.loads(call.arguments) == TOOL_INPUT and final.output_text == "Let me look."
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_a_forced_tool_becomes_anthropics_tool_choice(served: Served) -> None:
    """tool_choice naming a function (parallel calls off) is Anthropic's `tool` choice, not
    the text path's 400."""
    await served.sdk.responses.create(
        model="claude-fake", input=ASK, tools=TOOLS, parallel_tool_calls=False,
        tool_choice={"type": "function", "name": "read_file"},
    )
    assert served.upstream.requests[0].body["tool_choice"] == {
        "type": "tool", "name": "read_file", "disable_parallel_tool_use": True
    }
