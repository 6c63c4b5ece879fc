"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's API over the pipeline.

System and developer messages become the system prompt; user and assistant messages (content
as a string or text parts) the conversation; `user` the session. Streaming sends
`chat.completion.chunk` events as `data:` lines, a usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`. A body that uses tools (`tools`,
`tool_choice`, tool turns) goes natively, as sent, to a provider that takes Chat Completions
bodies (an OpenAI-compatible one) and comes back as it answered; with an Anthropic provider
instead it is translated to a Messages body and its answer back (`chat_anthropic`), plain
and streamed. To any other provider (echo, llama.cpp's `/completion`) the body is text:
tools may be offered (a model may always answer without calling one; these never call),
and a tool conversation's calls and results reach it rendered as turns. What the pipeline
cannot carry (a `tool_choice` that forces a call without a provider that calls tools,
images, `n` > 1, stop sequences) is refused with a 400 naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.request import (
    NATIVE_ANTHROPIC,
    NATIVE_FORMAT,
    NATIVE_OPENAI_CHAT,
    OPENAI_CLIENT_HEADERS,
    InferenceRequest,
    Message,
    StreamChunk,
    Usage,
)
from orchestrator.server.anthropic_api import takes_native
from orchestrator.server.anthropic_api import to_request as anthropic_request
from orchestrator.server.bodies import (
    MAX_ITEMS,
    OPTIMIZE_FIELD,
    SEMANTIC_FIELD,
    body_schema,
    body_size,
    cache_headers,
    client_retries,
    client_timeout_s,
    json_object,
    off_loop,
    semantic_wanted,
    validated,
    with_optimize_opt_in,
    with_task,
)
from orchestrator.server.chat_anthropic import chat_chunks, chat_completion, messages_body
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.state import ServerState, server_state
from orchestrator.server.streaming import open_stream, sse, sse_response

__all__ = ["ChatBody", "router", "to_request"]

router = APIRouter(tags=["openai"])
State = Annotated[ServerState, Depends(server_state)]


class ContentPart(BaseModel):
    """A content part; only `text` parts are served."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, refusal: accepted, ignored

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatBody(BaseModel):
    """The subset of a Chat Completions request the pipeline serves."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_ITEMS)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    user: str | None = Field(None, max_length=256)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None


def _refuse(field: str, message: str) -> RequestRejected:
    return RequestRejected(bad_request(f"{field}: {message}", field=field))


def _text_of(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise _refuse(f"{where}[{i}]", f"content parts of type {part.type!r} are not supported")
        parts.append(part.text)
    return "".join(parts)


def to_request(
    body: ChatBody, *, timeout_s: float | None = None, retries: bool = False
) -> InferenceRequest:
    """The text pipeline request for `body` (`timeout_s`: the client's own, `retries`: whether
    the client retries by itself): offered tools are not sent (the model answers in text),
    tool calls and results become text turns; raises `RequestRejected` naming a field it
    cannot carry."""
    if body.tool_choice not in (None, "none", "auto"):
        raise _refuse(
            "tool_choice",
            "forcing a tool call needs an OpenAI-compatible or Anthropic provider; this "
            "server's providers answer in text (tools may be offered with tool_choice 'auto')",
        )
    if body.n not in (None, 1):
        raise _refuse("n", "only n=1 is supported")
    if body.stop:
        raise _refuse("stop", "stop sequences are not supported by this server")
    system: list[str] = []
    turns: list[Message] = []
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        text = _text_of(m.content, f"{where}.content")
        if m.role in ("system", "developer"):
            system.append(text)
        elif m.role == "tool":
            turns.append(Message("user", f"[tool_result] {text}"))
        elif m.tool_calls:
            calls = [call.get("function", call) for call in m.tool_calls]
            rendered = f"[tool_calls] {json.dumps(calls, ensure_ascii=False)}"
            turns.append(Message("assistant", f"{text}\n{rendered}" if text else rendered))
        else:
            turns.append(Message(m.role, text))
    if not turns:
        raise _refuse("messages", "at least one user or assistant message is needed")
    return InferenceRequest(
        messages=tuple(turns),
        system="\n\n".join(system) or None,
        model=body.model,
        # What the client asked for, or nothing: a default here would cut long answers.
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        session_id=body.user or None,
        metadata={"api": "openai"},
        timeout_s=timeout_s,
        client_retries=retries,
    )


def _prepare(
    data: dict[str, Any],
    timeout_s: float | None = None,
    retries: bool = False,
    native_headers: Mapping[str, str] | None = None,
    anthropic: bool = False,
) -> tuple[ChatBody, InferenceRequest]:
    """The validated body and its pipeline request: with `native_headers` (the provider takes
    Chat Completions bodies) a body that uses tools goes as it came; else, with `anthropic`
    (a provider takes Messages bodies), translated to a native Messages body; else the text
    request."""
    body: ChatBody = validated(ChatBody, data)
    if native_headers is not None and _uses_tools(body):
        return body, native_request(
            data, headers=native_headers, timeout_s=timeout_s, retries=retries
        )
    if anthropic and _uses_tools(body):
        translated = anthropic_request(
            messages_body(data), native=True, timeout_s=timeout_s, retries=retries
        )
        return body, dataclasses.replace(
            translated, metadata={**translated.metadata, "api": "openai"}
        )
    return body, to_request(body, timeout_s=timeout_s, retries=retries)


def _uses_tools(body: ChatBody) -> bool:
    """Whether the body needs a provider that calls tools: it offers some, or holds turns of
    a tool conversation."""
    return (
        bool(body.tools)
        or body.tool_choice not in (None, "none")
        or any(m.role == "tool" or m.tool_calls for m in body.messages)
    )


def native_request(
    data: Mapping[str, Any],
    *,
    headers: Any,
    timeout_s: float | None,
    retries: bool,
) -> InferenceRequest:
    """The pipeline request carrying a Chat Completions body as it came (for a provider that
    takes it natively): a client's, or one translated from a Responses body; its text is
    rendered only for token estimates."""
    from orchestrator.server.responses_api import forwarded_headers
    from orchestrator.server.streaming import dumps

    metadata = {"api": "openai", NATIVE_FORMAT: NATIVE_OPENAI_CHAT}
    forwarded = forwarded_headers(headers)
    if forwarded:
        metadata[OPENAI_CLIENT_HEADERS] = json.dumps(forwarded, sort_keys=True)
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
    temperature, user = data.get("temperature"), data.get("user")
    return InferenceRequest(
        messages=(Message("user", dumps(data.get("messages", []))),),
        model=str(data["model"]),
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens >= 1 else None,
        temperature=temperature if isinstance(temperature, int | float) else None,
        session_id=user if isinstance(user, str) and user else None,
        metadata=metadata,
        native={k: v for k, v in data.items() if k != "stream"},
        timeout_s=timeout_s,
        client_retries=retries,
    )


async def _native_chunks(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[bytes]:
    """The provider's own chunks as it sent them, then `[DONE]`."""
    try:
        async for chunk in chunks:
            if chunk.native is not None:
                yield sse(chunk.native)
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("openai"))
        return
    yield sse("[DONE]")


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


@router.post(
    "/v1/chat/completions",
    summary="OpenAI Chat Completions (JSON, or SSE data chunks with stream=true)",
    responses={200: {"content": {"text/event-stream": {}}}},
    response_model=None,
    openapi_extra=body_schema(ChatBody),
)
async def chat_completions(http: Request, state: State) -> Response:
    data = await json_object(http)
    native = takes_native(state.pipeline, NATIVE_OPENAI_CHAT)
    body, request = await off_loop(
        body_size(http),
        _prepare,
        data,
        client_timeout_s(http.headers.get("x-stainless-timeout")),
        client_retries(http.headers),
        http.headers if native else None,
        takes_native(state.pipeline, NATIVE_ANTHROPIC),
    )
    extra = body.model_extra or {}
    if not semantic_wanted(http.headers, extra.get(SEMANTIC_FIELD)):
        request = dataclasses.replace(request, semantic_dedup=False)
    request = with_optimize_opt_in(request, http.headers, extra.get(OPTIMIZE_FIELD))
    request = with_task(dataclasses.replace(request, client=state.client_of(http)), http.headers)
    created = int(state.wall_clock())
    if request.native_format == NATIVE_ANTHROPIC and request.native is not None:
        # tools through an Anthropic provider: its Messages answer, in Chat Completions shape
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            events = await open_stream(state.pipeline, request)
            translated = chat_chunks(
                events,
                completion_id=_completion_id(),
                created=created,
                model=body.model,
                include_usage=include_usage,
            )
            return sse_response(translated, events)
        answer = await state.pipeline.infer(request)
        assert answer.native is not None
        return JSONResponse(
            chat_completion(answer.native, completion_id=_completion_id(), created=created)
        )
    if request.native is not None:  # tools: the provider's own answer, as it sent it
        if body.stream:
            native_chunks = await open_stream(state.pipeline, request)
            return sse_response(_native_chunks(native_chunks), native_chunks)
        answer = await state.pipeline.infer(request)
        return JSONResponse(answer.native)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = await open_stream(state.pipeline, request)
        return sse_response(_chunks(chunks, body.model, created, include_usage), chunks)
    response = await state.pipeline.infer(request)
    completion = {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text, "refusal": None},
                "logprobs": None,
                "finish_reason": response.finish_reason or "stop",
            }
        ],
        "usage": _usage(response.usage),
    }
    # already JSON-ready: skip FastAPI's generic encoder
    return JSONResponse(completion, headers=cache_headers(response))


async def _chunks(
    chunks: AsyncIterator[StreamChunk], model: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    completion_id = _completion_id()

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    yield sse(chunk({"role": "assistant", "content": ""}, None))
    usage: Usage | None = None
    finished = False
    try:
        async for piece in chunks:
            if piece.text:
                yield sse(chunk({"content": piece.text}, None))
            if piece.finish_reason is not None and not finished:
                finished = True
                yield sse(chunk({}, piece.finish_reason))
            usage = piece.usage or usage
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("openai"))
        return
    if not finished:
        yield sse(chunk({}, "stop"))
    if include_usage:
        yield sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(usage or Usage()),
            }
        )
    yield sse("[DONE]")


@router.get("/v1/models", summary="The models this server answers for (OpenAI shape)")
async def models(state: State) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": provider.default_model,
                "object": "model",
                "created": 0,
                "owned_by": provider.name,
            }
            for provider in state.pipeline.capabilities()
        ],
    }
