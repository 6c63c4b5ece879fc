"""`POST /v1/responses`: OpenAI's Responses API over the pipeline (what Codex calls).

With an OpenAI provider configured, a body goes through the pipeline *natively*: forwarded as
it came (tools, function calls and their outputs, reasoning items, `store`,
`previous_response_id`, every field this server does not know), with the client's
`openai-beta` and `x-openai-*` headers; the upstream's `response` object, or every one of its
stream events under its own name, comes back unchanged.

With only other providers (echo, Anthropic, llama.cpp) the body is translated to text:
`instructions` and system/developer messages become the system prompt; user and assistant
messages (a string, or `input_text` / `output_text` parts) the conversation; function calls
and their outputs are rendered as text turns; every other item (reasoning, Codex's tool lists
and configuration updates, …) carries nothing a text model reads and is skipped. Tools may be
offered (a model may always answer without
calling one); a `tool_choice` that forces a call, non-text input parts and
`previous_response_id` (this server stores no responses) are refused with a 400 naming the
field. The answer is one `message` output item; streamed, the event sequence the `openai` SDK
and Codex read: `response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, `response.completed` (with usage),
or `response.failed` when the pipeline fails mid-stream.

`GET /v1/responses` (Codex first tries the API's WebSocket mode) answers 426: Codex then
falls back to HTTP at once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, WebSocket
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.request import (
    NATIVE_FORMAT,
    NATIVE_OPENAI_RESPONSES,
    OPENAI_CLIENT_HEADERS,
    InferenceRequest,
    Message,
    StreamChunk,
    Usage,
)
from orchestrator.server.anthropic_api import takes_native
from orchestrator.server.bodies import client_retries, client_timeout_s, json_object, model_of
from orchestrator.server.http_errors import ApiError, RequestRejected, bad_request, from_exception
from orchestrator.server.state import ServerState, server_state
from orchestrator.server.streaming import dumps, open_stream, sse, sse_response

__all__ = ["forwarded_headers", "router", "to_request"]

router = APIRouter(tags=["openai"])
State = Annotated[ServerState, Depends(server_state)]

_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text"})
_CALLS = frozenset({"function_call", "custom_tool_call", "local_shell_call"})
_CALL_OUTPUTS = frozenset(
    {"function_call_output", "custom_tool_call_output", "local_shell_call_output"}
)


def _refuse(field: str, message: str) -> RequestRejected:
    return RequestRejected(bad_request(f"{field}: {message}", field=field))


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers a native body was written for: `openai-beta` (API betas) and
    `x-openai-*` (body variants such as Codex's); never its credentials."""
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() == "openai-beta" or name.lower().startswith("x-openai-")
    }


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _refuse(where, "expected a string or a list of content parts")
    parts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        else:
            raise _refuse(
                f"{where}[{i}].type",
                f"content parts of type {kind!r} need an OpenAI provider; "
                "this server's providers take text only",
            )
    return "".join(parts)


def _turns(items: Any) -> Iterator[tuple[str, str]]:
    """(role, text) for each input item a text model reads, in order."""
    if isinstance(items, str):
        yield "user", items
        return
    if not isinstance(items, list):
        raise _refuse("input", "expected a string or a list of input items")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, Mapping):
            raise _refuse(where, "expected an input item (an object)")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _refuse(f"{where}.role", f"unknown role {role!r}")
            yield str(role), _content_text(item.get("content"), f"{where}.content")
        elif kind in _CALLS:
            call = {k: item.get(k) for k in ("name", "arguments", "input", "action") if k in item}
            yield "assistant", f"[{kind}] {json.dumps(call, ensure_ascii=False)}"
        elif kind in _CALL_OUTPUTS:
            output = item.get("output")
            text = output if isinstance(output, str) else _content_text(output, f"{where}.output")
            yield "user", f"[{kind}] {text}"
        # Anything else (reasoning, Codex's `additional_tools` and `configuration_update`, …)
        # says nothing a text model could read; Codex adds kinds often, so none is refused.


def _session_of(data: Mapping[str, Any]) -> str | None:
    """The conversation a body belongs to: Codex names its thread in `prompt_cache_key`."""
    for name in ("prompt_cache_key", "safety_identifier", "user"):
        value = data.get(name)
        if isinstance(value, str) and 0 < len(value) <= 256:
            return value
    return None


def to_request(
    data: Mapping[str, Any],
    *,
    native: bool,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    retries: bool = False,
) -> InferenceRequest:
    """The pipeline request for a Responses body: with `native` the body itself (with the
    client's `forwarded_headers`), else its text translation; raises `RequestRejected`
    naming a field the translation cannot carry."""
    model = model_of(data)
    metadata = {"api": "openai"}
    if native:
        # Only an estimate of the tokens is needed from a body the upstream reads itself.
        instructions = data.get("instructions")
        system = instructions if isinstance(instructions, str) else None
        turns = [Message("user", dumps(data.get("input", "")))]
        metadata[NATIVE_FORMAT] = NATIVE_OPENAI_RESPONSES
        forwarded = forwarded_headers(headers or {})
        if forwarded:
            metadata[OPENAI_CLIENT_HEADERS] = json.dumps(forwarded, sort_keys=True)
    else:
        _check_translatable(data)
        system_parts = [data["instructions"]] if isinstance(data.get("instructions"), str) else []
        turns = []
        for role, text in _turns(data.get("input", "")):
            if role in ("system", "developer"):
                system_parts.append(text)
            else:
                turns.append(Message("assistant" if role == "assistant" else "user", text))
        system = "\n\n".join(p for p in system_parts if p) or None
        if not turns:
            raise _refuse("input", "at least one user or assistant message is needed")
    max_tokens = data.get("max_output_tokens")
    temperature = data.get("temperature")
    return InferenceRequest(
        messages=tuple(turns) or (Message("user", ""),),
        system=system,
        model=model,
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens >= 1 else None,
        temperature=temperature if isinstance(temperature, int | float) else None,
        session_id=_session_of(data),
        metadata=metadata,
        native={k: v for k, v in data.items() if k != "stream"} if native else None,
        timeout_s=timeout_s,
        client_retries=retries,
    )


def _check_translatable(data: Mapping[str, Any]) -> None:
    choice = data.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise _refuse(
            "tool_choice",
            "forcing a tool call needs an OpenAI provider; this server's providers take "
            "text only (tools may be offered with tool_choice 'auto')",
        )
    if data.get("previous_response_id") is not None:
        raise _refuse(
            "previous_response_id",
            "this server stores no responses; send the whole conversation in `input`",
        )
    if data.get("n") not in (None, 1):
        raise _refuse("n", "only one answer per request is supported")


def _response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status != "in_progress"
        else [],
    }


class _Response:
    """The `response` object of one translated answer, as it stands at each stage."""

    def __init__(self, data: Mapping[str, Any], model: str, created: int) -> None:
        self.id = _response_id()
        self.item_id = "msg_" + uuid.uuid4().hex
        self._data = data
        self._model = model
        self._created = created

    def object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        data = self._data
        return {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": data.get("instructions"),
            "max_output_tokens": data.get("max_output_tokens"),
            "model": self._model,
            "output": output,
            "parallel_tool_calls": data.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": data.get("reasoning") or {"effort": None, "summary": None},
            "store": False,
            "temperature": data.get("temperature"),
            "text": data.get("text") or {"format": {"type": "text"}},
            "tool_choice": data.get("tool_choice", "auto"),
            "tools": data.get("tools") or [],
            "top_p": data.get("top_p"),
            "truncation": data.get("truncation", "disabled"),
            "usage": _usage(usage) if usage is not None else None,
            "user": data.get("user"),
            "metadata": data.get("metadata") or {},
        }


def _status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


@router.post(
    "/v1/responses",
    summary="OpenAI Responses API (JSON, or SSE events with stream=true)",
    responses={200: {"content": {"text/event-stream": {}}}},
    response_model=None,
)
async def responses(http: Request, state: State) -> Response:
    data = await json_object(http)
    native = takes_native(state.pipeline, NATIVE_OPENAI_RESPONSES)
    request = to_request(
        data,
        native=native,
        headers=http.headers,
        timeout_s=client_timeout_s(http.headers.get("x-stainless-timeout")),
        retries=client_retries(http.headers),
    )
    stream = data.get("stream") is True
    model = request.model or ""
    if stream:
        chunks = await open_stream(state.pipeline, request)
        if native:
            return sse_response(_native_events(chunks), chunks)
        shaped = _Response(data, model, int(state.wall_clock()))
        return sse_response(_events(chunks, shaped), chunks)
    response = await state.pipeline.infer(request)
    if response.native is not None:
        return JSONResponse(response.native)  # as the provider sent it
    shaped = _Response(data, response.model, int(state.wall_clock()))
    status = _status_of(response.finish_reason)
    item = _message_item(shaped.item_id, response.text, status)
    return JSONResponse(shaped.object(status, [item], response.usage))


@router.get("/v1/responses", include_in_schema=False)
async def responses_over_http_only() -> Response:
    return _upgrade_required()


@router.websocket("/v1/responses")
async def responses_websocket(websocket: WebSocket) -> None:
    # Codex tries the WebSocket mode first; a 426 sends it to HTTP at once (other refusals
    # make it retry the upgrade five times first).
    await websocket.send_denial_response(_upgrade_required())


def _upgrade_required() -> Response:
    error = ApiError(
        status=426,
        kind="upgrade_required",
        message="this server serves the Responses API over HTTP only: POST /v1/responses",
    )
    return JSONResponse(error.body_for("openai"), status_code=426)


async def _native_events(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[bytes]:
    """The provider's own stream events, under their own names."""
    try:
        async for chunk in chunks:
            event = chunk.native
            if event is not None:
                yield sse(event, str(event.get("type", "message")))
    except OrchestratorError as exc:
        yield _failed(exc)


def _failed(exc: OrchestratorError, shaped: _Response | None = None) -> bytes:
    error = from_exception(exc)
    body = {"code": error.openai_code or error.kind, "message": error.message}
    if shaped is None:
        return sse({"type": "error", **body, "param": None}, "error")
    return sse(
        {"type": "response.failed", "response": shaped.object("failed", [], error=body)},
        "response.failed",
    )


async def _events(chunks: AsyncIterator[StreamChunk], shaped: _Response) -> AsyncIterator[bytes]:
    sequence = 0

    def event(payload: dict[str, Any]) -> bytes:
        nonlocal sequence
        payload["sequence_number"] = sequence
        sequence += 1
        return sse(payload, payload["type"])

    where = {"item_id": shaped.item_id, "output_index": 0, "content_index": 0}
    started = shaped.object("in_progress", [])
    yield event({"type": "response.created", "response": started})
    yield event({"type": "response.in_progress", "response": started})
    yield event(
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": _message_item(shaped.item_id, "", "in_progress"),
        }
    )
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield event({"type": "response.content_part.added", **where, "part": empty_part})
    parts: list[str] = []
    usage: Usage | None = None
    finish: str | None = None
    try:
        async for chunk in chunks:
            if chunk.text:
                parts.append(chunk.text)
                yield event(
                    {"type": "response.output_text.delta", **where, "delta": chunk.text,
                     "logprobs": []}
                )
            usage = chunk.usage or usage
            finish = chunk.finish_reason or finish
    except OrchestratorError as exc:
        yield _failed(exc, shaped)
        return
    text = "".join(parts)
    status = _status_of(finish)
    item = _message_item(shaped.item_id, text, status)
    yield event({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
    yield event({"type": "response.content_part.done", **where, "part": item["content"][0]})
    yield event({"type": "response.output_item.done", "output_index": 0, "item": item})
    done = "response.incomplete" if status == "incomplete" else "response.completed"
    yield event({"type": done, "response": shaped.object(status, [item], usage or Usage())})
