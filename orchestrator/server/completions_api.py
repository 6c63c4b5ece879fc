"""`POST /v1/completions`: OpenAI's legacy text completions over the pipeline (what IDE
autocompletion extensions call).

The `prompt` is one user turn to whichever provider is configured; a list of prompts is
answered with one choice per prompt (each its own pipeline request, in flight together, so
duplicates are coalesced); `echo` puts the prompt before the answer. `max_tokens` defaults to
16, as OpenAI's does. Streaming sends `text_completion` chunks as `data:` lines, a usage chunk
when `stream_options.include_usage` is set, then `data: [DONE]`. What the pipeline cannot carry
(token-array prompts, `suffix`, `logprobs`, `n` or `best_of` above 1, `stop`) is refused with a
400 naming the field.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.request import InferenceRequest, StreamChunk, Usage
from orchestrator.server.bodies import (
    OPTIMIZE_FIELD,
    body_schema,
    client_retries,
    client_timeout_s,
    json_body,
    with_optimize_opt_in,
    with_task,
)
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.state import ServerState, server_state
from orchestrator.server.streaming import open_stream, sse, sse_response

__all__ = ["CompletionBody", "router", "to_requests"]

router = APIRouter(tags=["openai"])
State = Annotated[ServerState, Depends(server_state)]

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for a completion that names no limit."""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class CompletionBody(BaseModel):
    """The subset of a legacy Completions request the pipeline serves."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    best_of: int | None = Field(None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    stop: str | list[str] | None = None
    user: str | None = Field(None, max_length=256)


def _refuse(field: str, message: str) -> RequestRejected:
    return RequestRejected(bad_request(f"{field}: {message}", field=field))


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if not prompt:
        return [""]
    raise _refuse("prompt", "token-array prompts are not supported; send text")


def to_requests(
    body: CompletionBody, *, timeout_s: float | None = None, retries: bool = False
) -> list[InferenceRequest]:
    """One pipeline request per prompt of `body`; raises `RequestRejected` naming a field the
    pipeline cannot carry."""
    if body.n not in (None, 1) or body.best_of not in (None, 1):
        raise _refuse("n" if body.n not in (None, 1) else "best_of", "only 1 is supported")
    if body.suffix:
        raise _refuse("suffix", "insertion (a suffix) is not supported by this server")
    if body.logprobs is not None:
        raise _refuse("logprobs", "log probabilities are not supported by this server")
    if body.stop:
        raise _refuse("stop", "stop sequences are not supported by this server")
    return [
        InferenceRequest(
            prompt,
            model=body.model,
            max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=body.temperature,
            session_id=body.user or None,
            metadata={"api": "openai"},
            timeout_s=timeout_s,
            client_retries=retries,
        )
        for prompt in _prompts(body.prompt)
    ]


def _completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


@router.post(
    "/v1/completions",
    summary="OpenAI legacy Completions (JSON, or SSE data chunks with stream=true)",
    responses={200: {"content": {"text/event-stream": {}}}},
    response_model=None,
    openapi_extra=body_schema(CompletionBody),
)
async def completions(http: Request, state: State) -> Response:
    body = await json_body(http, CompletionBody)
    client = state.client_of(http)
    optimize = (body.model_extra or {}).get(OPTIMIZE_FIELD)  # the opt-in, as on every door
    requests = [
        with_optimize_opt_in(
            with_task(dataclasses.replace(request, client=client), http.headers),
            http.headers,
            optimize,
        )
        for request in to_requests(
            body,
            timeout_s=client_timeout_s(http.headers.get("x-stainless-timeout")),
            retries=client_retries(http.headers),
        )
    ]
    created = int(state.wall_clock())
    if body.stream:
        if len(requests) != 1:
            raise _refuse("prompt", "streaming serves one prompt at a time")
        (request,) = requests
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = await open_stream(state.pipeline, request)
        prefix = request.prompt if body.echo else ""
        return sse_response(
            _chunks(chunks, body.model, created, include_usage, prefix or ""), chunks
        )
    answers = await asyncio.gather(*(state.pipeline.infer(r) for r in requests))
    total = Usage()
    choices = []
    for index, (request, answer) in enumerate(zip(requests, answers, strict=True)):
        text = (request.prompt or "") + answer.text if body.echo else answer.text
        choices.append(
            {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": answer.finish_reason or "stop",
            }
        )
        total = Usage(
            input_tokens=total.input_tokens + answer.usage.input_tokens,
            output_tokens=total.output_tokens + answer.usage.output_tokens,
            cache_read_input_tokens=total.cache_read_input_tokens
            + answer.usage.cache_read_input_tokens,
            cache_creation_input_tokens=total.cache_creation_input_tokens
            + answer.usage.cache_creation_input_tokens,
        )
    return JSONResponse(
        {
            "id": _completion_id(),
            "object": "text_completion",
            "created": created,
            "model": answers[0].model,
            "choices": choices,
            "usage": _usage(total),
        }
    )


async def _chunks(
    chunks: AsyncIterator[StreamChunk],
    model: str,
    created: int,
    include_usage: bool,
    prefix: str,
) -> AsyncIterator[bytes]:
    completion_id = _completion_id()

    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }

    if prefix:
        yield sse(chunk(prefix, None))
    usage: Usage | None = None
    finished = False
    try:
        async for piece in chunks:
            if piece.text:
                yield sse(chunk(piece.text, None))
            if piece.finish_reason is not None and not finished:
                finished = True
                yield sse(chunk("", piece.finish_reason))
            usage = piece.usage or usage
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("openai"))
        return
    if not finished:
        yield sse(chunk("", "stop"))
    if include_usage:
        final = chunk("", None)
        final["choices"] = []
        final["usage"] = _usage(usage or Usage())
        yield sse(final)
    yield sse("[DONE]")
