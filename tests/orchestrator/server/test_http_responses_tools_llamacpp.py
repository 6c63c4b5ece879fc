"""Tools through `/v1/responses` to the llama.cpp provider, driven by the official `openai`
SDK: the Responses body is translated to a Chat Completions body and goes natively to
llama-server's `/v1/chat/completions` (here a fake OpenAI-compatible upstream on 127.0.0.1
that asserts the tools it receives); its tool calls come back as `function_call` output
items, plain, streamed (as the function-call events) and over WS /v1/responses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from fakes import FakeOpenAI
from fakes.openai_api import FUNCTION_ARGUMENTS

from orchestrator import Pipeline, PipelineConfig
from orchestrator.providers.llamacpp import LlamaCppWorker
from orchestrator.server import ServerTask, create_app

PARAMETERS = {"type": "object", "properties": {"path": {"type": "string"}}}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file",
        "parameters": PARAMETERS,
        "strict": False,
    }
]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": PARAMETERS,
            "strict": False,
        },
    }
]
ASK: list[Any] = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "open main"}]},
]


class Served:
    def __init__(self, upstream: FakeOpenAI, pipeline: Pipeline, url: str) -> None:
        self.upstream, self.pipeline = upstream, pipeline
        self.sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with FakeOpenAI(reply="Let me look.") as upstream:
        upstream.call_tools = True
        pipeline = Pipeline(PipelineConfig(), LlamaCppWorker(upstream.url, api_key="local-key"))
        async with ServerTask(create_app(pipeline)) as url:
            served = Served(upstream, pipeline, url)
            yield served
            await served.sdk.close()


async def test_a_tool_call_round_trip_goes_through_llama_servers_chat_endpoint(
    served: Served,
) -> None:
    """The function tool reaches `/v1/chat/completions` in the chat form, with the
    instructions as a system message; the tool call comes back as a `function_call` item;
    the second turn's call and output reach it as an assistant `tool_calls` message and a
    `tool` message, and the final answer is text."""
    first = await served.sdk.responses.create(
        model="qwen",
        instructions="You are a coding agent.",
        input=ASK,
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=False,
        max_output_tokens=64,
    )
    (received,) = served.upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == "Bearer local-key"
    sent = received.body
    assert sent["tools"] == CHAT_TOOLS and sent["tool_choice"] == "auto"
    assert sent["parallel_tool_calls"] is False and sent["max_tokens"] == 64
    assert sent["messages"] == [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "open main"},
    ]
    assert first.status == "completed" and first.output_text == "Let me look."
    message, call = first.output
    assert message.type == "message" and call.type == "function_call"
    assert (call.name, call.arguments, call.call_id) == (
        "read_file",
        FUNCTION_ARGUMENTS,
        "call_fake_1",
    )
    assert first.usage is not None and first.usage.output_tokens > 0

    second = await served.sdk.responses.create(
        model="qwen",
        tools=TOOLS,
        input=[
            *ASK,
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me look."}],
            },
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "print('hi')"},
        ],
    )
    assert served.upstream.requests[1].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "read_file", "arguments": FUNCTION_ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "print('hi')"},
    ]
    assert [item.type for item in second.output] == ["message"]
    assert second.output_text == "Let me look."
    assert served.pipeline.snapshot().upstream_calls == 2


async def test_a_streamed_tool_call_arrives_as_function_call_events(served: Served) -> None:
    """stream=True: the text as output_text deltas of a message item, the tool call as a
    function_call item with its arguments in deltas, then response.completed with usage."""
    stream = await served.sdk.responses.create(model="qwen", input=ASK, tools=TOOLS, stream=True)
    events = [event async for event in stream]
    (received,) = served.upstream.requests
    assert received.body["stream"] is True and received.body["tools"] == CHAT_TOOLS
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Let me look."
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(pieces) == FUNCTION_ARGUMENTS
    (args_done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert args_done.arguments == FUNCTION_ARGUMENTS
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    assert added == ["message", "function_call"]
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert [item.type for item in done] == ["message", "function_call"]
    final = events[-1].response
    message, call = final.output
    assert message.type == "message" and final.output_text == "Let me look."
    assert (call.type, call.name, call.call_id) == ("function_call", "read_file", "call_fake_1")
    assert call.arguments == FUNCTION_ARGUMENTS and call.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_over_the_websocket_the_tool_call_takes_the_same_path(served: Served) -> None:
    """WS /v1/responses runs the same translation: the call comes as function-call events
    and the next turn's output reaches llama-server as a `tool` message."""
    async with served.sdk.responses.connect() as connection:
        await connection.response.create(model="qwen", input=ASK, tools=TOOLS)
        first = [event async for event in _until_done(connection)]
        call = first[-1].response.output[1]
        assert call.type == "function_call" and call.arguments == FUNCTION_ARGUMENTS
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "42"}
        await connection.response.create(
            model="qwen",
            input=[output],
            tools=TOOLS,
            previous_response_id=first[-1].response.id,
        )
        second = [event async for event in _until_done(connection)]
    assert "response.function_call_arguments.done" in [e.type for e in first]
    assert second[-1].type == "response.completed"
    assert second[-1].response.output_text == "Let me look."
    last = served.upstream.requests[1].body["messages"][-1]
    assert last == {"role": "tool", "tool_call_id": call.call_id, "content": "42"}


async def test_a_forced_function_becomes_the_chat_tool_choice(served: Served) -> None:
    """A tool_choice naming a function is Chat Completions' form of it, not the text
    path's 400."""
    await served.sdk.responses.create(
        model="qwen",
        input=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "name": "read_file"},
    )
    assert served.upstream.requests[0].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "read_file"},
    }


async def test_a_tool_of_another_type_is_a_400_naming_it(served: Served) -> None:
    """A non-function tool cannot be carried in a Chat Completions body: a 400 naming its
    type, and no upstream call."""
    with pytest.raises(openai.BadRequestError) as refused:
        await served.sdk.responses.create(
            model="qwen",
            input=ASK,
            tools=[*TOOLS, {"type": "web_search_preview"}],
        )
    assert "tools[1].type" in str(refused.value) and "web_search_preview" in str(refused.value)
    with pytest.raises(openai.BadRequestError):
        stream = await served.sdk.responses.create(
            model="qwen",
            input=ASK,
            tools=[{"type": "web_search_preview"}],
            stream=True,
        )
        [event async for event in stream]
    assert served.upstream.requests == []


async def _until_done(connection: Any) -> AsyncIterator[Any]:
    async for event in connection:
        yield event
        if event.type in ("response.completed", "response.failed", "error"):
            return


def test_the_chat_body_carries_what_llama_server_reads() -> None:
    """Developer messages become system messages, consecutive calls one assistant message,
    a JSON schema text format the `response_format`."""
    from orchestrator.server.responses_api import chat_body

    body = chat_body(
        {
            "model": "qwen",
            "tools": TOOLS,
            "input": [
                {"type": "message", "role": "developer", "content": "Be brief."},
                *ASK,
                {"type": "function_call", "call_id": "a", "name": "read_file", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "read_file", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "x"},
                {"type": "function_call_output", "call_id": "b", "output": "y"},
                {"type": "reasoning", "summary": []},
            ],
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {}}},
        }
    )
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in body["messages"][2]["tool_calls"]] == ["a", "b"]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {}},
    }
    assert json.dumps(body)  # JSON-ready
