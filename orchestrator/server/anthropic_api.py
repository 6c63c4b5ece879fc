"""`POST /v1/messages`: Anthropic's Messages API over the pipeline.

With `ANTHROPIC_BASE_URL` pointing at this server, Anthropic-SDK programs send their traffic
through the pipeline (`metadata.user_id` is the session).

Plain text conversations (system and content as strings or text blocks; `model`,
`max_tokens`, `temperature`) go through the pipeline as text, to any provider; streaming sends
the event sequence the SDK expects: `message_start`, `content_block_start`, `ping`,
`content_block_delta`…, `content_block_stop`, `message_delta` (with usage), `message_stop`.

Anything else (tools, tool_choice, tool_use/tool_result/image/document/thinking blocks,
stop_sequences, thinking, top_p/top_k, cache_control, fields this server does not know) goes
through the pipeline *natively*: the body is forwarded as sent (with the client's
`anthropic-beta` header) to a provider that takes Anthropic bodies, and its message, or its
stream events under their own names, come back unchanged. Claude Code works this way. When no
configured provider takes Anthropic bodies, such a request is refused with a 400 naming the
field; only `cache_control` and `citations` on text blocks, which do not change the answer,
are then ignored and the request served as text, as before.

A request's deadline is the client's own timeout when its SDK announces it
(`X-Stainless-Timeout`: 600 s by default), so long agent turns are not cut short; else the
pipeline's default.

`POST /v1/messages/count_tokens` (Claude Code calls it) answers the Anthropic provider's own
count, or, with none configured, the pipeline's estimate, marked `x-orchestrator-token-count:
estimated`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.pipeline import Pipeline
from orchestrator.providers.anthropic import AnthropicWorker
from orchestrator.request import (
    ANTHROPIC_BETA,
    NATIVE_ANTHROPIC,
    InferenceRequest,
    Message,
    StreamChunk,
)
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.state import ServerState, server_state
from orchestrator.server.streaming import dumps, open_stream, sse, sse_response
from orchestrator.tokens import estimate_request_tokens, estimate_tokens

__all__ = [
    "TOKEN_COUNT_HEADER",
    "CountTokensBody",
    "MessagesBody",
    "native_field",
    "router",
    "takes_native",
    "to_request",
]

TOKEN_COUNT_HEADER = "x-orchestrator-token-count"
"""Set to `estimated` when `count_tokens` answers with the pipeline's estimate, not a count."""

router = APIRouter(tags=["anthropic"])
State = Annotated[ServerState, Depends(server_state)]

# The pipeline speaks OpenAI's finish reasons; Anthropic clients expect these.
_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", None: "end_turn"}


class ContentBlock(BaseModel):
    """A content block of any type (text, image, tool_use, tool_result, thinking, …)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, max_length=64)
    text: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(None, max_length=256)


class MessagesBody(BaseModel):
    """A Messages API request: the fields the text path reads are checked; the rest (and
    fields this server does not know) are kept for the native path."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1, le=1_000_000)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


# What the text path carries; anything else in a body makes it native.
_TEXT_FIELDS = frozenset({"model", "max_tokens", "messages", "system", "temperature", "stream"})
# Accepted and ignored on the text path, as before: they never change the answer.
_HINTS = frozenset({"cache_control", "citations"})


def _blocks_native_field(blocks: list[ContentBlock], where: str, hints: bool) -> str | None:
    allowed = _HINTS if hints else frozenset()
    for i, block in enumerate(blocks):
        if block.type != "text" or block.text is None:
            return f"{where}[{i}].type" if block.type != "text" else f"{where}[{i}].text"
        extra = sorted(set(block.model_extra or ()) - allowed)
        if extra:
            return f"{where}[{i}].{extra[0]}"
    return None


def native_field(body: MessagesBody, *, ignore_hints: bool = False) -> str | None:
    """The first field of `body` that the text path cannot carry (None: plain text).

    With `ignore_hints`, `cache_control` and `citations` on text blocks do not count.
    """
    for name in sorted(body.model_fields_set):
        value = getattr(body, name)
        if name == "metadata":
            if value is not None and value.model_extra:
                return "metadata"
        elif name == "thinking":
            if value is not None and value.get("type") != "disabled":
                return "thinking"
        elif name not in _TEXT_FIELDS and value not in (None, [], {}):
            return name
    if isinstance(body.system, list):
        field = _blocks_native_field(body.system, "system", ignore_hints)
        if field is not None:
            return field
    for i, message in enumerate(body.messages):
        if isinstance(message.content, list):
            field = _blocks_native_field(message.content, f"messages[{i}].content", ignore_hints)
            if field is not None:
                return field
    return None


def takes_native(pipeline: Pipeline) -> bool:
    """True when some provider of `pipeline` takes native Anthropic bodies."""
    return any(NATIVE_ANTHROPIC in route.native_formats for route in pipeline.routes)


def _text_of(content: str | list[ContentBlock]) -> str:
    """A text rendering of content blocks (for the text path, and token estimates)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.text is not None:
            parts.append(block.text)
        elif block.type != "image":
            rest = block.model_dump(exclude={"type", "text"}, exclude_unset=True)
            parts.append(dumps(rest))  # tool_use input, tool_result content, thinking…
    return "".join(parts)


def to_request(
    body: MessagesBody,
    *,
    native: bool = False,
    beta: str | None = None,
    timeout_s: float | None = None,
) -> InferenceRequest:
    """The pipeline request for `body`: as text, or with `native` the body itself (and the
    `anthropic-beta` header to forward); `timeout_s` is its deadline (None: the default)."""
    messages = tuple(Message(m.role, _text_of(m.content)) for m in body.messages)
    system = None if body.system is None else _text_of(body.system)
    session = body.metadata.user_id if body.metadata is not None else None
    metadata = {"api": "anthropic"}
    raw = None
    if native:
        raw = body.model_dump(exclude_unset=True, exclude={"stream"})
        if beta:
            metadata[ANTHROPIC_BETA] = beta
    return InferenceRequest(
        messages=messages,
        system=system or None,
        model=body.model,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        session_id=session or None,
        metadata=metadata,
        native=raw,
        timeout_s=timeout_s,
    )


def _client_timeout_s(header: str | None) -> float | None:
    """How long the client waits, from the `X-Stainless-Timeout` the Anthropic SDKs send (600 s
    by default, Claude Code's `API_TIMEOUT_MS`): the request's deadline, so long agent turns
    are not cut at the pipeline's default. Anything unusable ("NOT_GIVEN") means no opinion."""
    try:
        value = float(header) if header else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


@router.post(
    "/v1/messages",
    summary="Anthropic Messages API (JSON, or SSE events with stream=true)",
    responses={200: {"content": {"text/event-stream": {}}}},
    response_model=None,
)
async def messages(
    body: MessagesBody,
    state: State,
    anthropic_beta: Annotated[str | None, Header(max_length=2048)] = None,
    x_stainless_timeout: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    native = False
    field = native_field(body)
    if field is not None:
        native = takes_native(state.pipeline)
        if not native and native_field(body, ignore_hints=True) is not None:
            field = native_field(body, ignore_hints=True)
            raise RequestRejected(
                bad_request(
                    f"{field}: this server's providers take plain text only; "
                    "configure the anthropic provider to send tools, non-text blocks, "
                    "thinking and other Messages API fields",
                    field=field,
                )
            )
    request = to_request(
        body, native=native, beta=anthropic_beta, timeout_s=_client_timeout_s(x_stainless_timeout)
    )
    if body.stream:
        chunks = await open_stream(state.pipeline, request)
        if native:
            return sse_response(_native_events(chunks))
        return sse_response(_events(chunks, request, body.model))
    response = await state.pipeline.infer(request)
    if response.native is not None:
        return JSONResponse(response.native)  # as the provider sent it
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


class CountTokensBody(BaseModel):
    """A `count_tokens` request: a Messages body without `max_tokens`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    tools: list[dict[str, Any]] | None = None


@router.post(
    "/v1/messages/count_tokens",
    summary="Anthropic token counting: the provider's count, or an estimate (header says so)",
    response_model=None,
)
async def count_tokens(
    body: CountTokensBody,
    state: State,
    anthropic_beta: Annotated[str | None, Header(max_length=2048)] = None,
) -> Response:
    # Counting is not inference: it is neither queued nor billed, so it goes straight to the
    # first Anthropic provider, which counts exactly.
    for route in state.pipeline.routes:
        if isinstance(route.worker, AnthropicWorker):
            counted = await route.worker.count_tokens(
                body.model_dump(exclude_unset=True),
                timeout_s=state.pipeline.config.default_timeout_s,
                beta=anthropic_beta,
            )
            return JSONResponse(counted)
    system = None if body.system is None else _text_of(body.system)
    estimate = estimate_request_tokens(system, (_text_of(m.content) for m in body.messages))
    if body.tools:
        estimate += estimate_tokens(dumps(body.tools))
    return JSONResponse({"input_tokens": estimate}, headers={TOKEN_COUNT_HEADER: "estimated"})


async def _native_events(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[bytes]:
    """The provider's own stream events, under their own names."""
    try:
        async for chunk in chunks:
            event = chunk.native
            if event is not None:
                yield sse(event, str(event.get("type", "message")))
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("anthropic"), "error")


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
