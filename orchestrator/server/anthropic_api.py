"""`POST /v1/messages`: Anthropic's Messages API over the pipeline.

With `ANTHROPIC_BASE_URL` pointing at this server, Anthropic-SDK programs send their traffic
through the pipeline. Text conversations are served (system as a string or text blocks, message
content as a string or text blocks, `max_tokens`, `temperature`, `model`, `metadata.user_id` as
the session); streaming sends the event sequence the SDK expects: `message_start`,
`content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`, `message_delta`
(with usage), `message_stop`. What the pipeline cannot carry (tools, images, documents, stop
sequences, extended thinking) is refused with a 400 naming the field, never silently dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.request import InferenceRequest, Message, StreamChunk
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.state import ServerState, server_state
from orchestrator.server.streaming import open_stream, sse, sse_response
from orchestrator.tokens import estimate_request_tokens

__all__ = ["MessagesBody", "router", "to_request"]

router = APIRouter(tags=["anthropic"])
State = Annotated[ServerState, Depends(server_state)]

# The pipeline speaks OpenAI's finish reasons; Anthropic clients expect these.
_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", None: "end_turn"}


class TextBlock(BaseModel):
    """A content block; only `text` blocks are served (others are refused by name)."""

    model_config = ConfigDict(extra="allow")  # cache_control, citations: accepted, ignored

    type: str
    text: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str | list[TextBlock]


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(None, max_length=256)


class MessagesBody(BaseModel):
    """The subset of a Messages API request the pipeline serves."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1, le=1_000_000)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


def _unsupported(field: str, message: str) -> RequestRejected:
    return RequestRejected(bad_request(f"{field}: {message}", field=field))


def _text_of(content: str | list[TextBlock], where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for i, block in enumerate(content):
        if block.type != "text":
            raise _unsupported(
                f"{where}[{i}].type",
                f"content blocks of type {block.type!r} are not supported; send text",
            )
        if block.text is None:
            raise _unsupported(f"{where}[{i}].text", "a text block needs 'text'")
        parts.append(block.text)
    return "".join(parts)


def to_request(body: MessagesBody) -> InferenceRequest:
    """The pipeline request for `body`; raises `RequestRejected` naming a field it cannot
    carry."""
    if body.tools:
        raise _unsupported("tools", "tool use is not supported by this server")
    if body.tool_choice is not None:
        raise _unsupported("tool_choice", "tool use is not supported by this server")
    if body.stop_sequences:
        raise _unsupported("stop_sequences", "stop sequences are not supported by this server")
    if body.thinking is not None and body.thinking.get("type") != "disabled":
        raise _unsupported("thinking", "extended thinking is not supported by this server")
    messages = tuple(
        Message(m.role, _text_of(m.content, f"messages[{i}].content"))
        for i, m in enumerate(body.messages)
    )
    system = None if body.system is None else _text_of(body.system, "system")
    session = body.metadata.user_id if body.metadata is not None else None
    return InferenceRequest(
        messages=messages,
        system=system or None,
        model=body.model,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        session_id=session or None,
        metadata={"api": "anthropic"},
    )


def _message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


@router.post(
    "/v1/messages",
    summary="Anthropic Messages API (JSON, or SSE events with stream=true)",
    responses={200: {"content": {"text/event-stream": {}}}},
    response_model=None,
)
async def messages(body: MessagesBody, state: State) -> Response:
    request = to_request(body)
    if body.stream:
        chunks = await open_stream(state.pipeline, request)
        return sse_response(_events(chunks, request, body.model))
    response = await state.pipeline.infer(request)
    message = {
        "id": _message_id(response.request_id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": [{"type": "text", "text": response.text}],
        "stop_reason": _STOP_REASON.get(response.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
        },
    }
    return JSONResponse(message)  # already JSON-ready: skip FastAPI's generic encoder


async def _events(
    chunks: AsyncIterator[StreamChunk], request: InferenceRequest, model: str
) -> AsyncIterator[bytes]:
    estimated_input = estimate_request_tokens(
        request.system, (m.content for m in request.messages_or_prompt)
    )
    yield sse(
        {
            "type": "message_start",
            "message": {
                "id": _message_id(request.request_id),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": estimated_input, "output_tokens": 0},
            },
        },
        "message_start",
    )
    yield sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    yield sse({"type": "ping"}, "ping")
    last: StreamChunk | None = None
    try:
        async for chunk in chunks:
            last = chunk
            if chunk.text:
                yield sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": chunk.text},
                    },
                    "content_block_delta",
                )
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("anthropic"), "error")
        return
    yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    usage: dict[str, int] = {"output_tokens": 0}
    if last is not None and last.usage is not None:
        usage = {
            "input_tokens": last.usage.input_tokens,
            "output_tokens": last.usage.output_tokens,
        }
    finish = last.finish_reason if last is not None else "stop"
    yield sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASON.get(finish, "end_turn"), "stop_sequence": None},
            "usage": usage,
        },
        "message_delta",
    )
    yield sse({"type": "message_stop"}, "message_stop")
