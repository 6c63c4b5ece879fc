"""`WS /v1/responses`: the Responses API's WebSocket mode (what Codex tries before HTTP).

One socket carries one conversation, a response at a time; a client that leaves mid-answer
stops the upstream call answering it. Each client text message is a JSON
event; `{"type": "response.create", …}` holds the fields of a `POST /v1/responses` body and is
answered by the events a `stream: true` body gets over SSE (`response.created`, the output
deltas, `response.completed` with usage), one JSON event per text message, through the same
path (`responses_api.open_events`: natively to an OpenAI provider, translated for the others).

What the mode adds to the HTTP API:

- `previous_response_id` names an earlier response *of this socket*, and `input` holds only
  what came after it: the server keeps each answered response's input and output items and
  sends the provider the whole conversation (it stores nothing past the socket; an id it does
  not hold, another socket's included, is an `error` event naming it). The latest
  `REMEMBERED_RESPONSES` are kept, and a conversation may grow to what one HTTP body could
  carry (the server's body limit, `MAX_ITEMS` input items);
- `generate: false` (Codex warms a connection up with its first request) answers
  `response.created` and `response.completed` with no output and no model call, and remembers
  the input for the next request to build on;
- `stream_id`, when a request has one, is copied into each event answering it;
- `response.processed` (the client's acknowledgement of an answer) needs no reply.

A problem is an `error` event (`{"type": "error", "status", "error": {"type", "code",
"message", "param"}}`, with `retry-after` in its `headers` when there is one), and the socket
stays open for the next request. The socket's bounds are those of `WS /v1/stream`: auth and
the Host/Origin guard before the handshake, the server's message-size limit, a write buffer
held to `ConnectionLimits.ws_write_buffer_bytes` and a client that stops reading cut off.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.types import Message

from orchestrator.errors import OrchestratorError
from orchestrator.request import StreamChunk
from orchestrator.server.bodies import MAX_ITEMS, client_retries, off_loop, parse_json
from orchestrator.server.http_errors import ApiError, RequestRejected, bad_request, from_exception
from orchestrator.server.responses_api import open_events, prewarmed_events
from orchestrator.server.state import ServerState, state_of
from orchestrator.server.streaming import dumps
from orchestrator.settings import DEFAULT_MAX_BODY_BYTES

__all__ = ["REMEMBERED_RESPONSES", "router"]

router = APIRouter(tags=["openai"])

REMEMBERED_RESPONSES = 8
"""How many answered responses one socket keeps for `previous_response_id` (the newest ones:
a client chains on its latest answer)."""

# The fields of a `response.create` that are about the socket, not the response.
_SOCKET_FIELDS = frozenset(
    {"type", "previous_response_id", "generate", "stream_id", "client_metadata", "stream"}
)
_DONE = frozenset({"response.completed", "response.incomplete"})


@dataclass(frozen=True, slots=True)
class _Answered:
    """One response of the socket: the conversation up to and including its output."""

    items: tuple[Any, ...]
    size: int  # characters of JSON the conversation came in as (the bound's measure)


class _History:
    """The socket's latest answered responses, by id."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._answered: OrderedDict[str, _Answered] = OrderedDict()

    def get(self, response_id: str) -> _Answered | None:
        return self._answered.get(response_id)

    def remember(self, response_id: str, answered: _Answered) -> None:
        self._answered[response_id] = answered
        self._answered.move_to_end(response_id)
        while len(self._answered) > REMEMBERED_RESPONSES:
            self._answered.popitem(last=False)


@router.websocket("/v1/responses")
async def responses_websocket(websocket: WebSocket) -> None:
    await websocket.accept()
    state = state_of(websocket)
    settings = state.settings
    history = _History(settings.max_body_bytes if settings else DEFAULT_MAX_BODY_BYTES)
    reading: asyncio.Task[Message] | None = None
    answering: asyncio.Task[None] | None = None
    try:
        while True:
            reading = reading or asyncio.create_task(websocket.receive())
            message = await reading
            reading = None
            if message["type"] == "websocket.disconnect":
                return
            answering = asyncio.create_task(
                _answer(websocket, state, history, message.get("text"))
            )
            # Read on while answering, to see the client leave (and stop its upstream call):
            # at most one message, the next request, waits here until this one is answered,
            # so a client that sends faster than it reads is held back by TCP.
            reading = asyncio.create_task(websocket.receive())
            await asyncio.wait((answering, reading), return_when=asyncio.FIRST_COMPLETED)
            if not answering.done() and reading.result()["type"] == "websocket.disconnect":
                return
            await answering
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client left (or the socket is closing): nothing to answer to
    finally:
        for task in (reading, answering):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (reading, answering) if t), return_exceptions=True)


async def _answer(
    websocket: WebSocket, state: ServerState, history: _History, text: str | None
) -> None:
    if text is None:
        await _send_error(websocket, bad_request("send each event as a JSON text message"))
        return
    try:
        data = await off_loop(len(text), parse_json, text)  # a big one off the event loop
    except RequestRejected as exc:
        await _send_error(websocket, exc.error)
        return
    if not isinstance(data, dict):
        await _send_error(websocket, bad_request("an event is a JSON object", field="type"))
        return
    kind = data.get("type")
    if kind == "response.processed":
        return  # the client read an answer: nothing to say back
    stream_id = data.get("stream_id") if isinstance(data.get("stream_id"), str) else None
    if kind != "response.create":
        error = bad_request(
            f"type: unknown client event {str(kind)[:64]!r}; this server reads "
            "'response.create' (and 'response.processed')",
            field="type",
        )
        await _send_error(websocket, error, stream_id)
        return
    try:
        body, size = _whole_body(data, history, len(text))
    except RequestRejected as exc:
        await _send_error(websocket, exc.error, stream_id)
        return
    try:
        if data.get("generate") is False:
            prewarmed = prewarmed_events(body, state)
        else:
            events, chunks = await open_events(
                body, state, client=state.client_of(websocket), headers=_headers(websocket),
                retries=client_retries(websocket.headers),
            )
    except OrchestratorError as exc:
        await _send_error(websocket, from_exception(exc), stream_id)
        return
    if data.get("generate") is False:
        for event in prewarmed:
            await _send(websocket, event, stream_id)
        history.remember(prewarmed[-1]["response"]["id"], _Answered(tuple(body["input"]), size))
        return
    done = await _relay(websocket, events, chunks, stream_id)
    if done is not None:
        response_id, output = done
        history.remember(
            response_id, _Answered((*body["input"], *output), size + len(dumps(output)))
        )


def _whole_body(
    data: Mapping[str, Any], history: _History, size: int
) -> tuple[dict[str, Any], int]:
    """The `POST /v1/responses` body a `response.create` stands for, with the conversation its
    `previous_response_id` continues put before its `input`, and the conversation's size;
    raises `RequestRejected` for an unknown id, an input that is not one, or a conversation
    over the bound."""
    body = {k: v for k, v in data.items() if k not in _SOCKET_FIELDS}
    body["stream"] = True
    items = _input_items(data.get("input", []))
    previous = data.get("previous_response_id")
    if previous is not None:
        answered = history.get(previous) if isinstance(previous, str) else None
        if answered is None:
            raise RequestRejected(ApiError(
                status=400,
                kind="invalid_request",
                message=f"previous_response_id: no response {str(previous)[:80]!r} on this "
                "socket (a socket remembers its latest "
                f"{REMEMBERED_RESPONSES} responses); send the whole conversation in `input`",
                field="previous_response_id",
                openai_code="previous_response_not_found",
            ))
        items = [*answered.items, *items]
        size += answered.size
    if len(items) > MAX_ITEMS:
        raise RequestRejected(bad_request(
            f"input: at most {MAX_ITEMS} items per conversation, got {len(items)}",
            field="input",
        ))
    if size > history.max_bytes:
        raise RequestRejected(ApiError(
            status=413,
            kind="request_too_large",
            message=f"the conversation is larger than {history.max_bytes} bytes (the limit "
            "of a request body); start a new one",
            field="input",
        ))
    body["input"] = items
    return body, size


def _input_items(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise RequestRejected(
            bad_request("input: expected a string or a list of input items", field="input")
        )
    return value


def _headers(websocket: WebSocket) -> dict[str, str]:
    """The handshake's headers a native body is forwarded with, less the beta that asked for
    this socket (the provider is called over HTTP)."""
    headers = dict(websocket.headers)
    beta = headers.get("openai-beta")
    if beta is not None:
        kept = [b for b in beta.split(",") if b.strip() and "websocket" not in b.lower()]
        if kept:
            headers["openai-beta"] = ",".join(kept)
        else:
            del headers["openai-beta"]
    return headers


async def _relay(
    websocket: WebSocket,
    events: AsyncIterator[dict[str, Any]],
    chunks: AsyncIterator[StreamChunk],
    stream_id: str | None,
) -> tuple[str, list[Any]] | None:
    """Send `events`; the id and output items of the response they complete, or None when
    it failed. Both streams are closed however it ends, so a client that leaves stops the
    upstream call."""
    output: list[Any] = []
    done: tuple[str, list[Any]] | None = None
    try:
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                kind = event.get("type")
                if kind == "error" and not isinstance(event.get("error"), Mapping):
                    event = _socket_error(event)
                elif kind == "response.output_item.done" and isinstance(event.get("item"), dict):
                    output.append(event["item"])
                elif kind in _DONE and isinstance(event.get("response"), Mapping):
                    response = event["response"]
                    final = response.get("output")
                    done = str(response.get("id")), list(final) if final else output
                await _send(websocket, event, stream_id)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return done


def _socket_error(event: Mapping[str, Any]) -> dict[str, Any]:
    """An SSE `error` event (its fields at the top) in the WebSocket mode's shape."""
    error = {
        "type": "server_error",
        "code": event.get("code"),
        "message": event.get("message") or "the response failed",
        "param": event.get("param"),
    }
    return {"type": "error", "error": error}


async def _send_error(
    websocket: WebSocket, error: ApiError, stream_id: str | None = None
) -> None:
    event: dict[str, Any] = {
        "type": "error",
        "status": error.status_for("openai"),
        "error": error.body_for("openai")["error"],
    }
    if error.retry_after_s is not None:
        event["headers"] = {"retry-after": str(max(1, round(error.retry_after_s)))}
    await _send(websocket, event, stream_id)


async def _send(websocket: WebSocket, event: dict[str, Any], stream_id: str | None) -> None:
    if stream_id is not None:
        event = {**event, "stream_id": stream_id}
    await websocket.send_text(dumps(event))
