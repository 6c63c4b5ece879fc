"""`POST /v1/messages`: Anthropic's Messages API over the pipeline.

With `ANTHROPIC_BASE_URL` pointing at this server, Anthropic-SDK programs send their traffic
through the pipeline (`metadata.user_id` is the session).

Plain text conversations (system and content as strings or text blocks; user, assistant and
mid-conversation system turns; `model`, `max_tokens`, `temperature`) go through the pipeline
as text, to any provider; streaming sends the event sequence the SDK expects:
`message_start`, `content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`,
`message_delta` (with usage), `message_stop`.

Anything else (tools, tool_choice, tool_use/tool_result/image/document/thinking blocks,
stop_sequences, thinking, top_p/top_k, cache_control, fields on messages, fields this server
does not know) goes through the pipeline *natively*: the body is forwarded as it came, checked
only for what the gateway needs itself (its size, a `model`, the caller's token), with the
client's `anthropic-beta` and `anthropic-version` headers, to a provider that takes Anthropic
bodies; its message, or every one of its stream events (pings included) under their own
names, comes back unchanged. Claude Code works this way. When no configured provider takes
Anthropic bodies, such a request is refused with a 400 naming the field; only
`cache_control` and `citations` on text blocks, which do not change the answer, are then
ignored and the request served as text.

A request's deadline is the client's own timeout when its SDK announces it
(`X-Stainless-Timeout`: 600 s by default), so long agent turns are not cut short; else the
pipeline's default. A client that announces its own retries (`X-Stainless-Retry-Count`) gets
one try per provider: its SDK retries, and the gateway does not stack retries on top.

`POST /v1/messages/count_tokens` (Claude Code calls it) forwards the body as it came to the
Anthropic provider and answers its count, or, with none configured, the pipeline's estimate,
marked `x-orchestrator-token-count: estimated`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from orchestrator.errors import OrchestratorError
from orchestrator.pipeline import Pipeline
from orchestrator.request import (
    ANTHROPIC_BETA,
    ANTHROPIC_VERSION,
    NATIVE_ANTHROPIC,
    InferenceRequest,
    Message,
    StreamChunk,
)
from orchestrator.server.bodies import (
    MAX_ITEMS,
    OPTIMIZE_FIELD,
    SEMANTIC_FIELD,
    body_schema,
    body_size,
    cache_headers,
    client_retries,
    client_timeout_s,
    header,
    header_doc,
    headers_of,
    json_object,
    model_of,
    off_loop,
    semantic_wanted,
    validated,
    with_optimize_opt_in,
    with_task,
)
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.responses import JsonResponse
from orchestrator.server.state import state_of
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

# The pipeline speaks OpenAI's finish reasons; Anthropic clients expect these.
_STOP_REASON = {"stop": "end_turn", "length": "max_tokens", None: "end_turn"}


class ContentBlock(BaseModel):
    """A content block of any type (text, image, tool_use, tool_result, thinking, …)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, max_length=64)
    text: str | None = None


class MessageIn(BaseModel):
    """One message: a user, assistant or (mid-conversation) system turn."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str | None = Field(None, max_length=256)


class MessagesBody(BaseModel):
    """A Messages API request as the text path reads it (and the API's documented schema).

    Only bodies the text path serves are validated against it; a body that goes native is
    checked for what the gateway itself needs (a `model`) and forwarded as it came."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1, le=1_000_000)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_ITEMS)
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


class CountTokensBody(BaseModel):
    """A `count_tokens` request: a Messages body without `max_tokens`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_ITEMS)
    system: str | list[ContentBlock] | None = None
    tools: list[dict[str, Any]] | None = None


# What the text path carries; anything else in a body makes it native.
_TEXT_FIELDS = frozenset({"model", "max_tokens", "messages", "system", "temperature", "stream"})
# Accepted and ignored on the text path, as before: they never change the answer.
_HINTS = frozenset({"cache_control", "citations"})


def _blocks_native_field(blocks: Any, where: str, hints: bool) -> str | None:
    if isinstance(blocks, str) or not isinstance(blocks, list):
        return None  # a string, or malformed (the text path's validation names it)
    allowed = _HINTS if hints else frozenset()
    for i, block in enumerate(blocks):
        if not isinstance(block, Mapping):
            return None
        if block.get("type") != "text":
            return f"{where}[{i}].type"
        if not isinstance(block.get("text"), str):
            return f"{where}[{i}].text"
        extra = sorted(set(block) - {"type", "text"} - allowed)
        if extra:
            return f"{where}[{i}].{extra[0]}"
    return None


def native_field(body: Mapping[str, Any], *, ignore_hints: bool = False) -> str | None:
    """The first field of a Messages `body` (its JSON) that the text path cannot carry
    (None: plain text, which may include system-role messages).

    With `ignore_hints`, `cache_control` and `citations` on text blocks do not count.
    """
    for name in sorted(body):
        value = body[name]
        if name == "metadata":
            if isinstance(value, Mapping) and set(value) - {"user_id"}:
                return "metadata"
        elif name == "thinking":
            if isinstance(value, Mapping) and value.get("type") != "disabled":
                return "thinking"
        elif name not in _TEXT_FIELDS and value not in (None, [], {}):
            return name
    field = _blocks_native_field(body.get("system"), "system", ignore_hints)
    if field is not None:
        return field
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, Mapping):
            continue
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            return f"messages[{i}].{extra[0]}"
        field = _blocks_native_field(message.get("content"), f"messages[{i}].content", ignore_hints)
        if field is not None:
            return field
    return None


def takes_native(pipeline: Pipeline, native_format: str = NATIVE_ANTHROPIC) -> bool:
    """True when some provider of `pipeline` takes native bodies of `native_format`."""
    return pipeline.takes_native(native_format)


def _text_of(content: Any) -> str:
    """A text rendering of content (a string or blocks), for the text path and token estimates."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, BaseModel):
            block = block.model_dump(exclude_unset=True)
        if not isinstance(block, Mapping):
            continue
        text = block.get("text")
        if isinstance(text, str):
            parts.append(text)
        elif block.get("type") != "image":
            rest = {k: v for k, v in block.items() if k not in ("type", "text")}
            parts.append(dumps(rest))  # tool_use input, tool_result content, thinking…
    return "".join(parts)


def _messages_of(messages: Any) -> tuple[Message, ...]:
    turns = []
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, BaseModel):
            role, content = message.role, message.content  # type: ignore[attr-defined]
        elif isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:
            continue
        if role in ("user", "assistant", "system"):
            turns.append(Message(role, _text_of(content)))
    return tuple(turns)


def to_request(
    body: MessagesBody | Mapping[str, Any],
    *,
    native: bool = False,
    beta: str | None = None,
    version: str | None = None,
    timeout_s: float | None = None,
    retries: bool = False,
    semantic_dedup: bool = True,
    client: str | None = None,
) -> InferenceRequest:
    """The pipeline request for a Messages body: as text (a validated `MessagesBody`), or with
    `native` the body's JSON itself, forwarded as it came with the client's `anthropic-beta`
    and `anthropic-version` headers; `timeout_s` is its deadline (None: the default);
    `retries` says the client retries by itself; `semantic_dedup` False opts it out of
    semantic dedup; `client` is who it is for in the usage ledger."""
    data = body.model_dump(exclude_unset=True) if isinstance(body, BaseModel) else dict(body)
    messages = _messages_of(data.get("messages"))
    if not messages:
        messages = (Message("user", ""),)  # a native body's rendering is only an estimate
    system = None if data.get("system") is None else _text_of(data.get("system"))
    metadata_in = data.get("metadata")
    session = metadata_in.get("user_id") if isinstance(metadata_in, Mapping) else None
    metadata = {"api": "anthropic"}
    raw = None
    if native:
        raw = {k: v for k, v in data.items() if k != "stream"}
        if beta:
            metadata[ANTHROPIC_BETA] = beta
        if version:
            metadata[ANTHROPIC_VERSION] = version
    max_tokens = data.get("max_tokens")
    temperature = data.get("temperature")
    return InferenceRequest(
        messages=messages,
        system=system or None,
        model=model_of(data),
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens >= 1 else None,
        temperature=temperature if isinstance(temperature, int | float) else None,
        session_id=session if isinstance(session, str) and session else None,
        metadata=metadata,
        native=raw,
        timeout_s=timeout_s,
        client_retries=retries,
        semantic_dedup=semantic_dedup,
        client=client,
    )


def _message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


# The headers the routes read themselves (`header`), with their length limits.
_BETA = ("anthropic-beta", 2048)
_VERSION = ("anthropic-version", 64)
_TIMEOUT = ("x-stainless-timeout", 64)


def _schema(model: type[BaseModel], *headers: tuple[str, int]) -> dict[str, Any]:
    """The documented request of a route that reads its JSON and headers itself (plain
    `Request` handlers: FastAPI's dependency solving cost more per request than it gave)."""
    return {"parameters": [header_doc(*h) for h in headers], **body_schema(model)}


@router.post(
    "/v1/messages",
    summary="Anthropic Messages API (JSON, or SSE events with stream=true)",
    responses={200: {"content": {"text/event-stream": {}}}},
    response_model=None,
    openapi_extra=_schema(MessagesBody, _BETA, _VERSION, _TIMEOUT),
)
async def messages(http: Request) -> Response:
    state = state_of(http)
    headers = headers_of(http)
    anthropic_beta = header(headers, *_BETA)
    anthropic_version = header(headers, *_VERSION)
    x_stainless_timeout = header(headers, *_TIMEOUT)
    data = await json_object(http)
    semantic = semantic_wanted(headers, data.pop(SEMANTIC_FIELD, None))  # ours, not sent on
    optimize = data.pop(OPTIMIZE_FIELD, None)  # ours too
    request, native = await off_loop(
        body_size(http),
        _prepare,
        data,
        takes_native(state.pipeline),
        _Client(
            beta=anthropic_beta,
            version=anthropic_version,
            timeout_s=client_timeout_s(x_stainless_timeout),
            retries=client_retries(headers),
            semantic=semantic,
            label=state.client_of(http),
        ),
    )
    request = with_task(with_optimize_opt_in(request, headers, optimize), headers)
    stream = data.get("stream") is True
    model = request.model or ""
    if stream:
        chunks = await open_stream(state.pipeline, request)
        if native:
            return sse_response(_native_events(chunks), chunks)
        return sse_response(_events(chunks, request, model), chunks)
    response = await state.pipeline.infer(request)
    headers = cache_headers(response)
    if response.native is not None:
        return JsonResponse(response.native, headers=headers)  # as the provider sent it
    message = {
        "id": _message_id(response.request_id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": [{"type": "text", "text": response.text}],
        "stop_reason": _STOP_REASON.get(response.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": _usage(response.usage),
    }
    return JsonResponse(message, headers=headers)  # JSON-ready: skip FastAPI's encoder


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Client:
    """What the client's headers (and its `SEMANTIC_FIELD`) say about a Messages request."""

    beta: str | None
    version: str | None
    timeout_s: float | None
    retries: bool
    semantic: bool
    label: str


def _prepare(
    data: dict[str, Any], native_ok: bool, client: _Client
) -> tuple[InferenceRequest, bool]:
    """The pipeline request for a Messages body and whether it goes native (see `messages`);
    pure work on the body, so a large one runs on a worker thread."""
    native = False
    if native_field(data) is not None:
        native = native_ok
        field = native_field(data, ignore_hints=True)
        if not native and field is not None:
            raise RequestRejected(
                bad_request(
                    f"{field}: this server's providers take plain text only; "
                    "configure the anthropic provider to send tools, non-text blocks, "
                    "thinking and other Messages API fields",
                    field=field,
                )
            )
    body: MessagesBody | dict[str, Any] = data if native else validated(MessagesBody, data)
    request = to_request(
        body, native=native, beta=client.beta, version=client.version,
        timeout_s=client.timeout_s, retries=client.retries, semantic_dedup=client.semantic,
        client=client.label,
    )
    return request, native


def _usage(usage: Any) -> dict[str, int]:
    out = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    if usage.cache_read_input_tokens:
        out["cache_read_input_tokens"] = usage.cache_read_input_tokens
    if usage.cache_creation_input_tokens:
        out["cache_creation_input_tokens"] = usage.cache_creation_input_tokens
    return out


@router.post(
    "/v1/messages/count_tokens",
    summary="Anthropic token counting: the provider's count, or an estimate (header says so)",
    response_model=None,
    openapi_extra=_schema(CountTokensBody, _BETA, _VERSION),
)
async def count_tokens(http: Request) -> Response:
    state = state_of(http)
    headers = headers_of(http)
    anthropic_beta = header(headers, *_BETA)
    anthropic_version = header(headers, *_VERSION)
    data = await json_object(http)
    # A provider that counts (Anthropic) counts exactly, the body as it came; with none (or
    # its breaker open) the pipeline's estimate answers, marked as such.
    if any(c.counts_tokens for c in state.pipeline.capabilities()):
        model_of(data)
        counted = await state.pipeline.count_tokens(
            data, beta=anthropic_beta, version=anthropic_version
        )
        if counted is not None:
            return JsonResponse(counted)
    estimate = await off_loop(body_size(http), _estimate, data)
    return JsonResponse({"input_tokens": estimate}, headers={TOKEN_COUNT_HEADER: "estimated"})


def _estimate(data: dict[str, Any]) -> int:
    body: CountTokensBody = validated(CountTokensBody, data)
    system = None if body.system is None else _text_of(body.system)
    estimate = estimate_request_tokens(system, (_text_of(m.content) for m in body.messages))
    if body.tools:
        estimate += estimate_tokens(dumps(body.tools))
    return estimate


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
