"""`WS /v1/responses`, the Responses API's WebSocket mode, driven by the official `openai` SDK
(`responses.connect()`) and, for what the SDK will not send, a plain websockets client: the
SSE stream's events one per message, `previous_response_id` as the socket's own conversation,
`generate: false`, errors as `error` events that leave the socket serving, and the socket
behind the same token and Origin guard as the rest of the server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest
import websockets
from conftest import PricedEcho, echo_pipeline
from fakes import FakeOpenAI
from fakes.openai_api import FUNCTION_ARGUMENTS
from pipeline_fakes import ScriptedWorker
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from orchestrator import OpenAIWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app
from orchestrator.server.responses_ws import REMEMBERED_RESPONSES
from orchestrator.settings import ServerSettings

MODEL = "gpt-5.4-mini"
TOKEN = "tok-ws-responses-1"
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
    {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Be a coder."}],
    },
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "open main"}]},
]


def sdk(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def until_done(events: Iterator[Any]) -> list[Any]:
    """The events answering one request: up to its `response.completed` (or failure)."""
    answer = []
    for event in events:
        answer.append(event)
        if event.type in ("response.completed", "response.incomplete", "response.failed", "error"):
            return answer
    raise AssertionError(f"the socket closed after {[e.type for e in answer]}")


def raw_socket(url: str, **kwargs: Any) -> ClientConnection:
    return connect(url.replace("http", "ws", 1) + "/v1/responses", open_timeout=5, **kwargs)


def raw_answer(ws: ClientConnection) -> list[dict[str, Any]]:
    answer = []
    while True:
        event = json.loads(ws.recv(timeout=5))
        answer.append(event)
        if event["type"] in ("response.completed", "response.failed", "error"):
            return answer


# --- translated: a text provider ---------------------------------------------------------


def test_a_response_comes_as_the_sse_streams_events_one_per_message(
    start_server: Callable[..., str],
) -> None:
    """The same body gets the same event sequence over the socket as over SSE (each on a
    server of its own: the second would be a cache hit), and the SDK reads the answer and its
    usage from `response.completed`."""
    over_sse = [
        e.type for e in sdk(start_server()).responses.create(model="echo", input=ASK, stream=True)
    ]
    url = start_server()
    with sdk(url).responses.connect() as connection:
        connection.response.create(model="echo", input=ASK)
        answer = until_done(iter(connection))
    assert [e.type for e in answer] == over_sse
    assert [e.sequence_number for e in answer] == list(range(len(answer)))
    final = answer[-1].response
    assert final.output_text == "open main" and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_previous_response_id_puts_the_sockets_conversation_before_the_input(
    start_server: Callable[..., str],
) -> None:
    """The second request sends only its new turn; the provider reads the whole
    conversation: the first input, the first answer, the new turn."""
    worker = ScriptedWorker()
    url = start_server(echo_pipeline(worker))
    with sdk(url).responses.connect() as connection:
        connection.response.create(model="echo", instructions="Be brief.", input="red green")
        first = until_done(iter(connection))[-1].response
        connection.response.create(
            model="echo", instructions="Be brief.", input="blue", previous_response_id=first.id
        )
        second = until_done(iter(connection))[-1].response
    assert second.status == "completed" and second.id != first.id
    last = worker.requests[-1]
    assert [(m.role, m.content) for m in last.messages] == [
        ("user", "red green"),
        ("assistant", first.output_text),
        ("user", "blue"),
    ]
    assert last.system == "Be brief."


def test_generate_false_answers_without_a_model_call_and_is_built_on(
    start_server: Callable[..., str],
) -> None:
    """A warm-up (`generate: false`, Codex's first request) is created and completed with no
    output and no pipeline request; the next request continues its input."""
    worker = ScriptedWorker()
    url = start_server(echo_pipeline(worker))
    with sdk(url).responses.connect() as connection:
        connection.response.create(model="echo", input=ASK, generate=False)
        warm = until_done(iter(connection))
        assert not worker.requests
        connection.response.create(
            model="echo", input="and test", previous_response_id=warm[-1].response.id
        )
        answer = until_done(iter(connection))
    assert [e.type for e in warm] == ["response.created", "response.completed"]
    assert warm[-1].response.output == [] and warm[-1].response.usage.total_tokens == 0
    assert answer[-1].type == "response.completed"
    (request,) = worker.requests
    assert [m.content for m in request.messages] == ["open main", "and test"]
    assert request.system == "Be a coder."


def test_an_unknown_previous_response_is_an_error_naming_it_and_the_socket_serves_on(
    start_server: Callable[..., str],
) -> None:
    """An id this socket never answered (another socket's among them) is an `error` event
    with OpenAI's code, naming the id; the next request on the socket is answered."""
    url = start_server()
    with sdk(url).responses.connect() as other:
        other.response.create(model="echo", input="elsewhere")
        elsewhere = until_done(iter(other))[-1].response.id
    with sdk(url).responses.connect() as connection:
        for unknown in ("resp_never", elsewhere):
            connection.response.create(model="echo", input="hi", previous_response_id=unknown)
            (error,) = until_done(iter(connection))
            assert error.type == "error" and error.status == 400
            assert error.error.code == "previous_response_not_found"
            assert error.error.param == "previous_response_id"
            assert unknown in error.error.message
        connection.response.create(model="echo", input="still here")
        assert until_done(iter(connection))[-1].response.output_text == "still here"


def test_only_the_latest_responses_are_remembered(start_server: Callable[..., str]) -> None:
    """A socket keeps its latest `REMEMBERED_RESPONSES` answers: the oldest one beyond them is
    forgotten (an error), the newest is still continued."""
    url = start_server()
    with sdk(url).responses.connect() as connection:
        ids = []
        for n in range(REMEMBERED_RESPONSES + 1):
            connection.response.create(model="echo", input=f"turn {n}")
            ids.append(until_done(iter(connection))[-1].response.id)
        connection.response.create(model="echo", input="x", previous_response_id=ids[0])
        assert until_done(iter(connection))[-1].type == "error"
        connection.response.create(model="echo", input="x", previous_response_id=ids[-1])
        assert until_done(iter(connection))[-1].type == "response.completed"


def test_a_conversation_grows_only_to_what_one_body_could_carry(
    start_server: Callable[..., str],
) -> None:
    """The conversation a socket builds is bounded by the server's body limit: the request
    that would take it past is an `error` event (413), and the socket serves on."""
    url = start_server(settings=ServerSettings(provider="echo", max_body_bytes=4096))
    with sdk(url).responses.connect() as connection:
        connection.response.create(model="echo", input="a " * 500)
        first = until_done(iter(connection))[-1].response
        assert first.status == "completed"
        connection.response.create(model="echo", input="b " * 1000, previous_response_id=first.id)
        (error,) = until_done(iter(connection))
        assert error.type == "error" and error.status == 413 and error.error.param == "input"
        connection.response.create(model="echo", input="small", previous_response_id=first.id)
        assert until_done(iter(connection))[-1].type == "response.completed"


def test_bad_messages_are_error_events_and_the_socket_serves_on(
    start_server: Callable[..., str],
) -> None:
    """Not JSON, not an object, an unknown event type, a binary frame, a field the provider
    cannot carry: each gets an `error` event in the Responses format; `response.processed`
    gets nothing; a good request after them is answered, with its `stream_id` on every
    event."""
    url = start_server()
    with raw_socket(url) as ws:
        for bad, param in [
            ("{not json", "body"),
            ("[1, 2]", "type"),
            (json.dumps({"type": "session.update"}), "type"),
            (b"\x00\x01", None),
            (
                json.dumps(
                    {
                        "type": "response.create",
                        "model": "echo",
                        "input": "hi",
                        "tool_choice": "required",
                        "tools": TOOLS,
                    }
                ),
                "tool_choice",
            ),
        ]:
            ws.send(bad)
            (error,) = raw_answer(ws)
            assert error["type"] == "error" and error["status"] == 400, error
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["param"] == param and error["error"]["message"]
        ws.send(json.dumps({"type": "response.processed", "response_id": "resp_x"}))
        ws.send(
            json.dumps(
                {"type": "response.create", "model": "echo", "input": "fine", "stream_id": "lane-1"}
            )
        )
        answer = raw_answer(ws)
    assert answer[0]["type"] == "response.created"  # nothing answered response.processed
    assert answer[-1]["response"]["output"][0]["content"][0]["text"] == "fine"
    assert {event.get("stream_id") for event in answer} == {"lane-1"}


def test_a_refusal_is_an_error_event_with_its_status(start_server: Callable[..., str]) -> None:
    """A response the budget refuses is an `error` event with the status and code the HTTP
    API would answer (429 `insufficient_quota`)."""
    url = start_server(echo_pipeline(PricedEcho(model=MODEL), global_budget_usd=1e-9))
    with sdk(url).responses.connect() as connection:
        connection.response.create(model=MODEL, input="spend a little money here")
        (error,) = until_done(iter(connection))
    assert error.type == "error" and error.status == 429
    assert error.error.code == "insufficient_quota"


def test_the_socket_needs_the_token_and_a_same_site_origin(
    start_server: Callable[..., str],
) -> None:
    """Without the server's token the upgrade is refused, as is one from another site's
    page; the SDK, whose API key is the token, is answered."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    with pytest.raises(InvalidStatus) as refused:
        raw_socket(url).close()
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        raw_socket(
            url,
            origin="http://evil.example",  # type: ignore[arg-type]
            additional_headers={"authorization": f"Bearer {TOKEN}"},
        ).close()
    assert refused.value.response.status_code == 403
    with sdk(url, TOKEN).responses.connect() as connection:
        connection.response.create(model="echo", input="hi")
        assert until_done(iter(connection))[-1].response.output_text == "hi"


def test_a_message_over_the_size_limit_closes_the_socket(
    start_server: Callable[..., str],
) -> None:
    """The socket reads messages up to the prompt limit (4 MiB); a larger one closes it
    (1009, when the close frame outruns the reset of the socket the client is still
    writing to), before the server parses it."""
    url = start_server()
    with pytest.raises(ConnectionClosed) as closed, raw_socket(url, max_size=None) as ws:
        ws.send(
            json.dumps(
                {"type": "response.create", "model": "echo", "input": "x" * (4 * 1024 * 1024)}
            )
        )
        ws.recv(timeout=5)
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009


def test_plain_get_is_not_a_route(start_server: Callable[..., str]) -> None:
    """Without an upgrade, GET /v1/responses is a method the path does not serve."""
    url = start_server()
    assert httpx2.get(url + "/v1/responses").status_code == 405


# --- native: an OpenAI provider ----------------------------------------------------------


@pytest.fixture
async def native() -> AsyncIterator[tuple[FakeOpenAI, Pipeline, str]]:
    async with FakeOpenAI(reply="Let me look.") as upstream:
        upstream.call_tools = True
        worker = OpenAIWorker("sk-upstream", base_url=upstream.api_url, model=MODEL)
        pipeline = Pipeline(PipelineConfig(), worker)
        async with ServerTask(create_app(pipeline)) as url:
            yield upstream, pipeline, url


async def test_a_tool_round_trip_reaches_the_upstream_as_whole_conversations(
    native: tuple[FakeOpenAI, Pipeline, str],
) -> None:
    """Natively, each request reaches the upstream over HTTP as a whole stateless body: the
    function call the first answer made and the output the client sends after it follow the
    first input, with no `previous_response_id` and none of the socket's own fields; the
    upstream's events come back as it sent them, and both calls are billed."""
    upstream, pipeline, url = native
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    async with client.responses.connect(
        extra_headers={"OpenAI-Beta": "responses_websockets=2026-02-06"}
    ) as connection:
        await connection.response.create(model=MODEL, input=ASK, tools=TOOLS, store=False)
        first = [event async for event in _until_done(connection)]
        call = first[-1].response.output[1]
        assert call.type == "function_call" and call.arguments == FUNCTION_ARGUMENTS
        output = {"type": "function_call_output", "call_id": call.call_id, "output": "print('hi')"}
        await connection.response.create(
            model=MODEL,
            input=[output],
            tools=TOOLS,
            store=False,
            previous_response_id=first[-1].response.id,
            stream_id="lane-9",
        )
        second = [event async for event in _until_done(connection)]
    await client.close()
    assert [e.type for e in first].count("response.output_item.done") == 2
    assert second[-1].type == "response.completed"
    assert second[-1].response.output_text == "Let me look."
    one, two = (r.body for r in upstream.requests)
    assert one["input"] == ASK and one["stream"] is True
    assert two["input"][: len(ASK)] == ASK
    assert [item["type"] for item in two["input"][len(ASK) :]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert two["input"][-1] == output
    for body in (one, two):
        assert not {"previous_response_id", "stream_id", "type", "generate"} & set(body)
    assert all("openai-beta" not in r.headers for r in upstream.requests)
    assert pipeline.snapshot().cost_usd_total > 0


async def test_a_client_that_leaves_mid_answer_stops_the_upstream_call(
    native: tuple[FakeOpenAI, Pipeline, str],
) -> None:
    """Closing the socket while the upstream has not answered yet (nothing was sent, so only
    reading the socket can tell) hangs up the upstream call."""
    upstream, _, url = native
    upstream.hold()
    async with websockets.connect(url.replace("http", "ws", 1) + "/v1/responses") as ws:
        await ws.send(json.dumps({"type": "response.create", "model": MODEL, "input": ASK}))
        await upstream.wait_for_requests(1, timeout_s=10)
    await upstream.wait_for_disconnects(1, timeout_s=10)
    upstream.release()


async def _until_done(connection: Any) -> AsyncIterator[Any]:
    async for event in connection:
        yield event
        if event.type in ("response.completed", "response.failed", "error"):
            return
