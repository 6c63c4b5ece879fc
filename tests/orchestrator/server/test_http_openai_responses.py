"""`POST /v1/responses`, driven by the official `openai` SDK: natively to an OpenAI provider
(a fake OpenAI upstream behind the real OpenAIWorker), and translated to text for the others
(the echo provider), plain and streaming, through dedup, budgets and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from conftest import PricedEcho, echo_pipeline
from fakes import FakeOpenAI, StreamError
from fakes.openai_api import FUNCTION_ARGUMENTS
from pipeline_fakes import ScriptedWorker

from orchestrator import OpenAIWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app

MODEL = "gpt-5.4-mini"  # priced in the shipped table
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
    {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be a coder."}]},  # noqa: E501
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "open main"}]},
]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


# --- translated: the echo provider -----------------------------------------------------------


def test_a_response_from_echo_has_the_answer_and_usage(start_server: Callable[..., str]) -> None:
    """responses.create on the text path: one message output item, output_text, usage."""
    url = start_server()
    response = client(url).responses.create(
        model="echo", instructions="Be brief.", input="red green blue"
    )
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "red green blue"
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant"
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )


def test_a_streamed_response_sends_the_event_sequence_the_sdk_reads(
    start_server: Callable[..., str],
) -> None:
    """stream=True: created, in_progress, item and part added, text deltas, done events and
    response.completed with usage, numbered in order; the SDK assembles the final response."""
    url = start_server()
    with client(url).responses.stream(model="echo", input=ASK) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") == 2  # "open ", "main"
    assert final.output_text == "open main" and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_raw_stream_events_carry_sequence_numbers(start_server: Callable[..., str]) -> None:
    """Every event of a translated stream has the next sequence number."""
    url = start_server()
    events = list(client(url).responses.create(model="echo", input="a b c", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_developer_messages_and_instructions_become_the_system_prompt(
    start_server: Callable[..., str],
) -> None:
    """Instructions and developer/system messages join into the system prompt; function calls
    and their outputs reach a text provider rendered as turns; other items are skipped."""
    worker = ScriptedWorker()
    url = start_server(echo_pipeline(worker))
    client(url).responses.create(
        model="echo",
        instructions="Rule one.",
        prompt_cache_key="thread-7",
        max_output_tokens=20,
        tools=TOOLS,
        input=[
            *ASK,
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "configuration_update", "id": "cu_1", "settings": {}},
            {"type": "function_call", "call_id": "c1", "name": "read_file", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "print('hi')"},
        ],
    )
    (request,) = worker.requests
    assert request.system == "Rule one.\n\nBe a coder."
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    assert request.messages[0].content == "open main"
    assert "read_file" in request.messages[1].content
    assert request.messages[2].content.endswith("print('hi')")
    assert request.session_id == "thread-7" and request.max_tokens == 20


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tool_choice": "required", "tools": TOOLS}, "tool_choice"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
    ],
)
def test_what_text_cannot_carry_is_a_400_naming_the_field(
    start_server: Callable[..., str], extra: dict[str, Any], field: str
) -> None:
    """Without an OpenAI provider, a forced tool call, a stored conversation or an image is
    refused with a 400 in OpenAI's error shape naming the field."""
    url = start_server()
    body = {"model": "echo", "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).responses.create(**body)
    error = caught.value.body
    assert isinstance(error, dict) and error["message"].startswith(f"{field}:")


def test_a_budget_refusal_is_openais_insufficient_quota(
    start_server: Callable[..., str],
) -> None:
    """A response that would cross the global budget is refused the way OpenAI refuses a
    spent account: 429 `insufficient_quota` (its SDK does not retry that)."""
    url = start_server(echo_pipeline(PricedEcho(model=MODEL), global_budget_usd=1e-9))
    with pytest.raises(openai.RateLimitError) as caught:
        client(url).responses.create(model=MODEL, input="spend a little money here")
    assert caught.value.code == "insufficient_quota"


# --- native: an OpenAI provider --------------------------------------------------------------


class Served:
    """A server whose pipeline uses the real OpenAIWorker pointed at a fake OpenAI upstream."""

    def __init__(self, upstream: FakeOpenAI, pipeline: Pipeline, url: str) -> None:
        self.upstream, self.pipeline, self.url = upstream, pipeline, url
        self.sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with FakeOpenAI(reply="Let me look.") as upstream:
        upstream.call_tools = True
        worker = OpenAIWorker("sk-upstream", base_url=upstream.api_url, model=MODEL)
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            served = Served(upstream, pipeline, url)
            yield served
            await served.sdk.close()


async def test_a_native_body_reaches_the_upstream_as_sent_and_comes_back_unchanged(
    served: Served,
) -> None:
    """Tools, unknown fields and the client's openai-beta header reach the upstream as sent
    (with the server's key, never the client's); the function call comes back unchanged."""
    response = await served.sdk.responses.create(
        model=MODEL,
        input=ASK,
        tools=TOOLS,
        tool_choice="auto",
        store=False,
        include=["reasoning.encrypted_content"],
        extra_body={"client_metadata": {"thread": "t1"}},
        extra_headers={"OpenAI-Beta": "responses=v1", "x-openai-variant": "lite"},
    )
    (received,) = served.upstream.requests
    assert received.path == "/v1/responses"
    assert received.body["input"] == ASK and received.body["tools"] == TOOLS
    assert received.body["client_metadata"] == {"thread": "t1"}
    assert "stream" not in received.body
    assert received.headers["openai-beta"] == "responses=v1"
    assert received.headers["x-openai-variant"] == "lite"
    assert received.headers["authorization"] == "Bearer sk-upstream"
    assert response.id == "resp_fake_1" and response.output_text == "Let me look."
    call = response.output[1]
    assert call.type == "function_call" and call.name == "read_file"
    assert call.arguments == FUNCTION_ARGUMENTS


async def test_a_function_call_output_follow_up_is_answered(served: Served) -> None:
    """The turn after a function call (the call, then its output) is passed through."""
    conversation = [
        *ASK,
        {"type": "function_call", "call_id": "call_1", "name": "read_file",
         "arguments": FUNCTION_ARGUMENTS},
        {"type": "function_call_output", "call_id": "call_1", "output": "print('hi')"},
    ]
    response = await served.sdk.responses.create(model=MODEL, input=conversation, tools=TOOLS)
    (received,) = served.upstream.requests
    assert received.body["input"] == conversation
    assert [item.type for item in response.output] == ["message"]


async def test_a_native_stream_comes_back_event_for_event_and_is_billed(served: Served) -> None:
    """Streamed, the client gets every upstream event in order (the function call's items
    included); the answer is billed at the model's price, cached input as cache reads."""
    served.upstream.cached_tokens = 1000
    async with served.sdk.responses.stream(model=MODEL, input=ASK, tools=TOOLS) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    (received,) = served.upstream.requests
    assert received.body["stream"] is True
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3  # "Let ", "me ", "look."
    assert kinds.count("response.output_item.done") == 2  # the message and the call
    assert final.id == "resp_fake_1" and final.output[1].type == "function_call"
    snapshot = served.pipeline.snapshot()
    assert snapshot.cost_usd_total > 0
    price = served.pipeline.prices.price(MODEL)
    assert price is not None
    usage = final.usage
    assert usage is not None and usage.input_tokens_details.cached_tokens == 1000
    expected_usd = (
        (usage.input_tokens - 1000) * price.input_per_mtok_usd
        + 1000 * price.cache_read_per_mtok_usd
        + usage.output_tokens * price.output_per_mtok_usd
    ) / 1e6
    assert snapshot.cost_usd_total == pytest.approx(expected_usd)


@pytest.mark.parametrize("stream", [False, True])
async def test_identical_concurrent_native_requests_make_one_upstream_call(
    served: Served, stream: bool
) -> None:
    """Five agents sending the same Responses body at once: one upstream call; each gets the
    whole answer."""

    async def ask() -> Any:
        if not stream:
            return await served.sdk.responses.create(model=MODEL, input=ASK, tools=TOOLS)
        async with served.sdk.responses.stream(model=MODEL, input=ASK, tools=TOOLS) as events:
            return await events.get_final_response()

    served.upstream.hold()
    calls = [asyncio.create_task(ask()) for _ in range(5)]
    async with asyncio.timeout(5):
        while served.pipeline.coalescer.hits < 4:
            await asyncio.sleep(0.005)
    served.upstream.release()
    answers = await asyncio.gather(*calls)
    assert served.upstream.request_count == 1
    assert all(a.id == "resp_fake_1" and a.output_text == "Let me look." for a in answers)


async def test_an_error_event_mid_stream_reaches_the_client(served: Served) -> None:
    """An upstream failure after the stream started ends the client's stream with an `error`
    event, as OpenAI's own API does, never a silent truncation."""
    served.upstream.fail_next(StreamError(after_chunks=1, status=500, message="boom"))
    stream = await served.sdk.responses.create(model=MODEL, input=ASK, stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "error"
    assert "failed (HTTP 500)" in events[-1].message and "boom" not in events[-1].message


def _codex_run(thread: str, item_id: str, *, text: str = "open main") -> dict[str, Any]:
    """The fields two Codex runs asking the same thing send differently."""
    return {
        "input": [
            ASK[0],
            {"type": "message", "id": item_id, "role": "user",
             "content": [{"type": "input_text", "text": text}]},
        ],
        "prompt_cache_key": thread,
        "extra_body": {"client_metadata": {"installation_id": thread, "session": item_id}},
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_two_codex_runs_asking_the_same_thing_share_one_upstream_call(
    served: Served, stream: bool,
) -> None:
    """Identical questions from two Codex runs at once coalesce: the key ignores
    client_metadata, prompt_cache_key and input item ids — which still reach the upstream."""

    async def ask(fields: dict[str, Any]) -> None:
        if stream:
            async with served.sdk.responses.stream(model=MODEL, tools=TOOLS, **fields) as events:
                await events.get_final_response()
        else:
            await served.sdk.responses.create(model=MODEL, tools=TOOLS, **fields)

    served.upstream.hold()
    calls = [asyncio.create_task(ask(_codex_run("thread-a", "msg_1"))),
             asyncio.create_task(ask(_codex_run("thread-b", "msg_2")))]
    async with asyncio.timeout(10):
        while served.pipeline.coalescer.hits < 1:
            await asyncio.sleep(0.005)
    served.upstream.release()
    await asyncio.gather(*calls)
    (received,) = served.upstream.requests
    assert received.body["prompt_cache_key"] == "thread-a"
    assert received.body["input"][1]["id"] == "msg_1"


async def test_a_codex_run_asking_something_else_makes_its_own_call(served: Served) -> None:
    """Only those fields are ignored: a different message makes its own upstream call."""
    await served.sdk.responses.create(model=MODEL, **_codex_run("thread-a", "msg_1"))
    await served.sdk.responses.create(model=MODEL, **_codex_run("thread-a", "msg_1",
                                                                 text="open lib"))
    assert served.upstream.request_count == 2


CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
]


async def test_chat_completion_tools_go_natively_to_an_openai_provider(served: Served) -> None:
    """Tools and tool_choice through /v1/chat/completions reach an OpenAI upstream as sent; its
    tool call comes back unchanged, billed; the tool result turn goes the same way."""
    ask = [{"role": "user", "content": "open main"}]
    first = await served.sdk.chat.completions.create(
        model=MODEL, messages=ask, tools=CHAT_TOOLS, tool_choice="auto",  # type: ignore[arg-type]
        extra_body={"parallel_tool_calls": False},
    )
    (received,) = served.upstream.requests
    assert received.path == "/v1/chat/completions"
    assert received.body["tools"] == CHAT_TOOLS and received.body["tool_choice"] == "auto"
    assert received.body["parallel_tool_calls"] is False
    assert received.headers["authorization"] == "Bearer sk-upstream"
    [call] = first.choices[0].message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("read_file", FUNCTION_ARGUMENTS)
    assert first.choices[0].finish_reason == "tool_calls"
    assert served.pipeline.snapshot().cost_usd_total > 0

    second = await served.sdk.chat.completions.create(
        model=MODEL, tools=CHAT_TOOLS,  # type: ignore[arg-type]
        messages=[*ask, first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
                  {"role": "tool", "tool_call_id": call.id, "content": "print('hi')"}],
    )
    assert served.upstream.requests[1].body["messages"][-1]["content"] == "print('hi')"
    assert second.choices[0].message.content == "Let me look."


async def test_streamed_chat_completion_tools_come_back_chunk_for_chunk(served: Served) -> None:
    """Streamed with tools: the upstream's chunks arrive as sent, the tool call included; the
    usage chunk the gateway asked for (to bill) is not passed to a client that did not."""
    stream = await served.sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "open main"}],
        tools=CHAT_TOOLS, stream=True,  # type: ignore[arg-type]
    )
    chunks = [chunk async for chunk in stream]
    assert served.upstream.requests[0].body["stream_options"] == {"include_usage": True}
    calls = [c for chunk in chunks for c in (chunk.choices[0].delta.tool_calls or [])]
    assert [c.function.name for c in calls if c.function] == ["read_file"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Let me look."
    assert served.pipeline.snapshot().cost_usd_total > 0
