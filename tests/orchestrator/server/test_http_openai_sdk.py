"""The OpenAI Chat Completions door, driven by the official `openai` SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import FailsMidStream, echo_pipeline
from pipeline_fakes import ScriptedWorker


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_chat_completion_returns_the_answer_and_usage(start_server: Callable[..., str]) -> None:
    """chat.completions.create gets the answer as the assistant message, with token usage."""
    url = start_server()
    completion = client(url).chat.completions.create(
        model="echo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "red green blue"},
        ],
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "red green blue"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_streamed_chat_completion_sends_chunks_then_usage(
    start_server: Callable[..., str],
) -> None:
    """stream=True yields content deltas, a finish reason, and a usage chunk when asked."""
    url = start_server()
    chunks = list(
        client(url).chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": [{"type": "text", "text": "a b c d"}]}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text == "a b c d"
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_stream_without_usage_option_sends_no_usage_chunk(
    start_server: Callable[..., str],
) -> None:
    """Without stream_options.include_usage every chunk has a choice and no usage."""
    url = start_server()
    chunks = list(
        client(url).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x y"}], stream=True
        )
    )
    assert all(c.choices and c.usage is None for c in chunks)


def test_system_and_developer_messages_become_the_system_prompt(
    start_server: Callable[..., str],
) -> None:
    """System/developer messages join into the system prompt; `user` becomes the session."""
    worker = ScriptedWorker()
    url = start_server(echo_pipeline(worker))
    client(url).chat.completions.create(
        model="echo",
        user="ide-1",
        max_tokens=20,
        messages=[
            {"role": "system", "content": "One."},
            {"role": "developer", "content": "Two."},
            {"role": "user", "content": "hi"},
        ],
    )
    (request,) = worker.requests
    assert request.system == "One.\n\nTwo."
    assert request.session_id == "ide-1" and request.max_tokens == 20


def test_models_lists_the_served_model(start_server: Callable[..., str]) -> None:
    """GET /v1/models lists each provider's model, in OpenAI's shape."""
    url = start_server()
    assert [m.id for m in client(url).models.list()] == ["echo"]


def test_a_bad_field_is_a_400_in_openai_shape(start_server: Callable[..., str]) -> None:
    """An invalid temperature is refused with OpenAI's error JSON naming the parameter."""
    url = start_server()
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], temperature=7
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "temperature"
    assert body["type"] == "invalid_request_error"


def test_tools_offered_to_the_echo_provider_are_answered_in_text(
    start_server: Callable[..., str],
) -> None:
    """The echo provider never calls a tool, so a request offering tools (tool_choice auto)
    is answered in text, plain and streamed; a tool conversation's call and result reach it
    as text turns."""
    url = start_server()  # the EchoWorker
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    answer = client(url).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi there"}], tools=tools,
        tool_choice="auto",
    )
    assert answer.choices[0].message.content == "hi there"
    assert answer.choices[0].message.tool_calls is None
    stream = client(url).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a b c"}], tools=tools, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b c"
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    worker = ScriptedWorker()
    client(start_server(echo_pipeline(worker))).chat.completions.create(
        model="echo", tools=tools,
        messages=[
            {"role": "user", "content": "run f"},
            {"role": "assistant", "content": None, "tool_calls": [call]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "call_1", "content": "f said 42"},
        ],
    )
    turns = worker.requests[-1].messages
    assert [m.role for m in turns] == ["user", "assistant", "user"]
    assert '"name": "f"' in turns[1].content and turns[2].content.endswith("f said 42")


def test_a_forced_tool_call_is_refused_naming_the_field(
    start_server: Callable[..., str],
) -> None:
    """A tool_choice that forces a call, which a provider answering in text cannot honour, is
    refused with param `tool_choice`."""
    url = start_server()
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice="required",
        )
    assert caught.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_an_error_mid_stream_reaches_the_sdk(start_server: Callable[..., str]) -> None:
    """After the first chunk, a failure arrives as an error data chunk; the SDK raises."""
    url = start_server(echo_pipeline(FailsMidStream()))
    received: list[str] = []
    with pytest.raises(openai.APIError, match=r"failed \(HTTP 500\)"):
        for chunk in client(url).chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "partial "
