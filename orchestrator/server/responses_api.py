"""`POST /v1/responses`: OpenAI's Responses API over the pipeline (what Codex calls).

With an OpenAI provider configured, a body goes through the pipeline *natively*: forwarded as
it came (tools, function calls and their outputs, reasoning items, `store`,
`previous_response_id`, every field this server does not know), with the client's
`openai-beta` and `x-openai-*` headers; the upstream's `response` object, or every one of its
stream events under its own name, comes back unchanged.

With an Anthropic provider (and no OpenAI one), a body that uses tools (offers some, forces a
call, or holds function calls or their outputs) is translated to a native Messages body
(`chat_anthropic`'s converters): `function_call` items become `tool_use` blocks,
`function_call_output` items `tool_result` blocks, other items as on the text path. The
answer's text blocks come back as `message` output items and its `tool_use` blocks as
`function_call` items (`call_id`, `name`, JSON `arguments`); streamed, each block is an
`output_item.added` … `output_item.done` run, text as `output_text` deltas and arguments as
`function_call_arguments` deltas, then `response.completed` with usage.

With neither but a provider that takes Chat Completions bodies (llama.cpp, whose
llama-server calls tools at its own `/v1/chat/completions`), such a body is translated to one
(`chat_body`): `instructions` and system/developer messages become system messages,
`function_call` items an assistant message's `tool_calls`, `function_call_output` items
`tool` messages, function tools and `tool_choice` the chat forms; it goes down the path
`/v1/chat/completions` bodies with tools take. The answer's content comes back as a `message`
item and each of its `tool_calls` as a `function_call` item, streamed as the same events
(the items the chat chunks open, ended with the stream). Either way a tool of another type
than `function` (web search, a custom tool, …) is refused with a 400 naming its type.

Otherwise (echo, llama.cpp or Anthropic without tools) the body is translated to text:
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

The API's WebSocket mode (`WS /v1/responses`, what Codex tries first) is `responses_ws`: it
runs each `response.create` through `open_events`, the path a `stream: true` body takes here.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from orchestrator.errors import OrchestratorError
from orchestrator.providers.anthropic import usage_of
from orchestrator.request import (
    NATIVE_ANTHROPIC,
    NATIVE_FORMAT,
    NATIVE_OPENAI_CHAT,
    NATIVE_OPENAI_RESPONSES,
    OPENAI_CLIENT_HEADERS,
    InferenceRequest,
    Message,
    StreamChunk,
    Usage,
)
from orchestrator.server.anthropic_api import takes_native
from orchestrator.server.anthropic_api import to_request as anthropic_request
from orchestrator.server.bodies import (
    OPTIMIZE_FIELD,
    client_retries,
    client_timeout_s,
    json_object,
    model_of,
    with_optimize_opt_in,
    with_task,
)
from orchestrator.server.chat_anthropic import (
    append_turn,
    assemble,
    finish_reason,
    function_tools,
    tool_result,
    tool_use,
)
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.openai_api import native_request as native_chat_request
from orchestrator.server.state import ServerState, server_state
from orchestrator.server.streaming import dumps, open_stream, sse, sse_response

__all__ = [
    "chat_body",
    "forwarded_headers",
    "messages_body",
    "open_events",
    "prewarmed_events",
    "router",
    "to_request",
    "uses_tools",
]

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
        turn = _turn(_item(item, f"input[{i}]"), f"input[{i}]")
        if turn is not None:
            yield turn


def _items(items: Any) -> list[Mapping[str, Any]]:
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    if not isinstance(items, list):
        raise _refuse("input", "expected a string or a list of input items")
    return [_item(item, f"input[{i}]") for i, item in enumerate(items)]


def _item(item: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise _refuse(where, "expected an input item (an object)")
    return item


def _output_text(item: Mapping[str, Any], where: str) -> str:
    output = item.get("output")
    return output if isinstance(output, str) else _content_text(output, f"{where}.output")


def _turn(item: Mapping[str, Any], where: str) -> tuple[str, str] | None:
    """(role, text) for an input item a text model reads, None for one it does not."""
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise _refuse(f"{where}.role", f"unknown role {role!r}")
        return str(role), _content_text(item.get("content"), f"{where}.content")
    if kind in _CALLS:
        call = {k: item.get(k) for k in ("name", "arguments", "input", "action") if k in item}
        return "assistant", f"[{kind}] {json.dumps(call, ensure_ascii=False)}"
    if kind in _CALL_OUTPUTS:
        return "user", f"[{kind}] {_output_text(item, where)}"
    # Anything else (reasoning, Codex's `additional_tools` and `configuration_update`, …)
    # says nothing a text model could read; Codex adds kinds often, so none is refused.
    return None


def uses_tools(data: Mapping[str, Any]) -> bool:
    """Whether a Responses body needs a provider that calls tools: it offers some, forces a
    call, or holds function calls or their outputs."""
    items = data.get("input")
    return (
        bool(data.get("tools"))
        or data.get("tool_choice") not in (None, "auto", "none")
        or (
            isinstance(items, list)
            and any(
                isinstance(item, Mapping) and item.get("type") in _CALLS | _CALL_OUTPUTS
                for item in items
            )
        )
    )


def messages_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic Messages body for a Responses body that uses tools: `function_call`
    items become `tool_use` blocks, `function_call_output` items `tool_result` blocks, every
    other item what the text path reads; raises `RequestRejected` naming a field it cannot
    carry."""
    _check_stateless(data)
    system = [data["instructions"]] if isinstance(data.get("instructions"), str) else []
    turns: list[dict[str, Any]] = []
    for i, item in enumerate(_items(data.get("input", ""))):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "function_call":
            call = tool_use(
                str(item.get("call_id")),
                str(item.get("name")),
                item.get("arguments"),
                f"{where}.arguments",
            )
            append_turn(turns, "assistant", [call])
        elif kind == "function_call_output":
            result = tool_result(str(item.get("call_id")), _output_text(item, where))
            append_turn(turns, "user", [result])
        elif (turn := _turn(item, where)) is not None:
            role, text = turn
            if role in ("system", "developer"):
                system.append(text)
            elif text:
                append_turn(
                    turns,
                    "assistant" if role == "assistant" else "user",
                    [{"type": "text", "text": text}],
                )
    if not turns:
        raise _refuse("input", "at least one user or assistant message is needed")
    return assemble(data, turns, system, data.get("max_output_tokens"))


def chat_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The Chat Completions body for a Responses body that uses tools (for a provider that
    speaks Chat Completions natively, llama.cpp's llama-server): `instructions` and
    system/developer messages become system messages, user and assistant messages theirs,
    `function_call` items an assistant message's `tool_calls` (with the text before them),
    `function_call_output` items `tool` messages; function tools and `tool_choice` in the
    chat form, `max_output_tokens` as `max_tokens`, a JSON `text.format` as
    `response_format`. Raises `RequestRejected` naming a field it cannot carry (a tool of
    another type than `function`)."""
    _check_stateless(data)
    messages: list[dict[str, Any]] = []
    if isinstance(data.get("instructions"), str) and data["instructions"]:
        messages.append({"role": "system", "content": data["instructions"]})
    for i, item in enumerate(_items(data.get("input", ""))):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "function_call":
            arguments = item.get("arguments")
            call = {
                "id": str(item.get("call_id")),
                "type": "function",
                "function": {
                    "name": str(item.get("name")),
                    "arguments": arguments
                    if isinstance(arguments, str)
                    else dumps(arguments or {}),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(item.get("call_id")),
                    "content": _output_text(item, where),
                }
            )
        elif (turn := _turn(item, where)) is not None:
            role, text = turn
            if role in ("system", "developer"):
                messages.append({"role": "system", "content": text})
            elif text:
                messages.append({"role": role, "content": text})
    if all(m["role"] == "system" for m in messages):
        raise _refuse("input", "at least one user or assistant message is needed")
    body: dict[str, Any] = {"model": model_of(data), "messages": messages}
    if data.get("tools"):
        body["tools"] = [
            {"type": "function", "function": spec} for spec in function_tools(data["tools"])
        ]
    choice = _chat_tool_choice(data.get("tool_choice"))
    if choice is not None:
        body["tool_choice"] = choice
    max_tokens = data.get("max_output_tokens")
    if isinstance(max_tokens, int) and max_tokens >= 1:
        body["max_tokens"] = max_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if data.get(name) is not None:
            body[name] = data[name]
    text = data.get("text")
    text_format = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(text_format, Mapping) and text_format.get("type") == "json_schema":
        schema = {
            k: text_format[k]
            for k in ("name", "description", "schema", "strict")
            if k in text_format
        }
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(text_format, Mapping) and text_format.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    return body


def _chat_tool_choice(choice: Any) -> Any:
    """Chat Completions' `tool_choice` for a Responses one (None: the default)."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _refuse("tool_choice", "a function tool_choice needs the function's name")
        return {"type": "function", "function": {"name": name}}
    kind = choice.get("type") if isinstance(choice, Mapping) else choice
    raise _refuse(
        "tool_choice",
        f"tool_choice {kind!r} needs an OpenAI provider; this one "
        "takes 'auto', 'none', 'required' or a function",
    )


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
    client's `forwarded_headers`), else its text translation; opted in to the prompt
    optimizer by the body's `optimize_prompt` or the header in `headers`, as on the other
    doors (`with_optimize_opt_in`; the field is ours, never forwarded). Raises
    `RequestRejected` naming a field the translation cannot carry."""
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
    request = InferenceRequest(
        messages=tuple(turns) or (Message("user", ""),),
        system=system,
        model=model,
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens >= 1 else None,
        temperature=temperature if isinstance(temperature, int | float) else None,
        session_id=_session_of(data),
        metadata=metadata,
        native={k: v for k, v in data.items() if k not in _NOT_FORWARDED} if native else None,
        timeout_s=timeout_s,
        client_retries=retries,
    )
    return with_optimize_opt_in(request, headers or {}, data.get(OPTIMIZE_FIELD))


_NOT_FORWARDED = frozenset({"stream", OPTIMIZE_FIELD})  # ours, or set by the server


def _check_translatable(data: Mapping[str, Any]) -> None:
    choice = data.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise _refuse(
            "tool_choice",
            "forcing a tool call needs an OpenAI, Anthropic or llama.cpp provider; this "
            "server's providers take text only (tools may be offered with tool_choice 'auto')",
        )
    _check_stateless(data)


def _check_stateless(data: Mapping[str, Any]) -> None:
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
    timeout_s = client_timeout_s(http.headers.get("x-stainless-timeout"))
    retries = client_retries(http.headers)
    client = state.client_of(http)
    if data.get("stream") is True:
        events, chunks = await open_events(
            data,
            state,
            client=client,
            headers=http.headers,
            timeout_s=timeout_s,
            retries=retries,
        )
        return sse_response(_encoded(events), chunks)
    native = takes_native(state.pipeline, NATIVE_OPENAI_RESPONSES)
    route = None if native else _tools_route(state, data)
    if route is not None:
        return await _through_translation(
            data, state, route, timeout_s, retries, client, http.headers
        )
    request = with_task(
        dataclasses.replace(
            to_request(
                data, native=native, headers=http.headers, timeout_s=timeout_s, retries=retries
            ),
            client=client,
        ),
        http.headers,
    )
    response = await state.pipeline.infer(request)
    if response.native is not None:
        return JSONResponse(response.native)  # as the provider sent it
    shaped = _Response(data, response.model, int(state.wall_clock()))
    status = _status_of(response.finish_reason)
    item = _message_item(shaped.item_id, response.text, status)
    return JSONResponse(shaped.object(status, [item], response.usage))


async def open_events(
    data: Mapping[str, Any],
    state: ServerState,
    *,
    client: str,
    headers: Mapping[str, str],
    timeout_s: float | None = None,
    retries: bool = False,
) -> tuple[AsyncIterator[dict[str, Any]], AsyncIterator[StreamChunk]]:
    """The Responses stream events answering `data` as a `stream: true` body (each a JSON
    object with its `type`), and the pipeline stream under them, which the caller must close
    as well. A refusal (a field the provider cannot carry, overload, budget, the provider
    down) raises here, before the first event."""
    native = takes_native(state.pipeline, NATIVE_OPENAI_RESPONSES)
    route = None if native else _tools_route(state, data)
    if route is not None:
        request = _translated_request(data, route, timeout_s, retries, client, headers)
        shaped = _Response(data, model_of(data), int(state.wall_clock()))
        chunks = await open_stream(state.pipeline, request)
        parts = _anthropic_parts(chunks) if route == NATIVE_ANTHROPIC else _chat_parts(chunks)
        return _item_events(parts, shaped), chunks
    request = with_task(
        dataclasses.replace(
            to_request(data, native=native, headers=headers, timeout_s=timeout_s, retries=retries),
            client=client,
        ),
        headers,
    )
    chunks = await open_stream(state.pipeline, request)
    if native:
        return _native_events(chunks), chunks
    shaped = _Response(data, request.model or "", int(state.wall_clock()))
    return _events(chunks, shaped), chunks


def prewarmed_events(data: Mapping[str, Any], state: ServerState) -> list[dict[str, Any]]:
    """The events of a response created and completed with no output and no model call:
    the answer to a request that asks for no generation (`generate: false`, with which a
    client warms a connection up before its first turn)."""
    shaped = _Response(data, model_of(data) or "", int(state.wall_clock()))
    event = _numbered()
    return [
        event({"type": "response.created", "response": shaped.object("in_progress", [])}),
        event({"type": "response.completed", "response": shaped.object("completed", [], Usage())}),
    ]


async def _encoded(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """`events` as server-sent events, each named by its type."""
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            yield sse(event, str(event.get("type", "message")))


def _tools_route(state: ServerState, data: Mapping[str, Any]) -> str | None:
    """The native format a Responses body that uses tools is translated to for a provider
    that calls tools (Anthropic's Messages, else Chat Completions: llama.cpp), or None (no
    tools, or no such provider: the text path)."""
    if not uses_tools(data):
        return None
    for route in (NATIVE_ANTHROPIC, NATIVE_OPENAI_CHAT):
        if takes_native(state.pipeline, route):
            return route
    return None


def _translated_request(
    data: Mapping[str, Any],
    route: str,
    timeout_s: float | None,
    retries: bool,
    client: str,
    headers: Mapping[str, str],
) -> InferenceRequest:
    """The pipeline request taking a Responses body with tools to a provider as a native
    body of `route`: a Messages body (Anthropic) or a Chat Completions one (for the task
    `headers` name, if any)."""
    if route == NATIVE_ANTHROPIC:
        translated = anthropic_request(
            messages_body(data), native=True, timeout_s=timeout_s, retries=retries
        )
    else:
        translated = native_chat_request(
            chat_body(data), headers={}, timeout_s=timeout_s, retries=retries
        )
    return with_task(
        dataclasses.replace(
            translated,
            metadata={**translated.metadata, "api": "openai"},
            session_id=_session_of(data) or translated.session_id,
            client=client,
        ),
        headers,
    )


async def _through_translation(
    data: Mapping[str, Any],
    state: ServerState,
    route: str,
    timeout_s: float | None,
    retries: bool,
    client: str,
    headers: Mapping[str, str],
) -> Response:
    """Tools through an Anthropic or Chat Completions provider: the body translated to its
    native format, its answer back as a Responses `response`."""
    request = _translated_request(data, route, timeout_s, retries, client, headers)
    shaped = _Response(data, model_of(data), int(state.wall_clock()))
    answer = await state.pipeline.infer(request)
    native = answer.native or {}
    output: list[dict[str, Any]] = []

    def text_item(text: Any, status: str) -> None:
        if isinstance(text, str) and text:
            item_id = shaped.item_id if not output else "msg_" + uuid.uuid4().hex
            output.append(_message_item(item_id, text, status))

    if route == NATIVE_ANTHROPIC:
        status = _status_of(finish_reason(native.get("stop_reason")))
        usage = usage_of(native.get("usage"))
        for block in native.get("content") or ():
            if block.get("type") == "text":
                text_item(block.get("text"), status)
            elif block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                output.append(_call_item(block["id"], block["name"], arguments, "completed"))
    else:
        choices = native.get("choices") or [{}]
        status, usage = _status_of(choices[0].get("finish_reason")), answer.usage
        message = choices[0].get("message") or {}
        text_item(message.get("content"), status)
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            output.append(
                _call_item(
                    str(call.get("id")),
                    str(function.get("name")),
                    function.get("arguments") or "{}",
                    "completed",
                )
            )
    return JSONResponse(shaped.object(status, output, usage))


def _call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    """A `function_call` output item."""
    return {
        "id": "fc_" + uuid.uuid4().hex,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


async def _native_events(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[dict[str, Any]]:
    """The provider's own stream events, as it sent them."""
    try:
        async for chunk in chunks:
            event = chunk.native
            if event is not None:
                yield dict(event)
    except OrchestratorError as exc:
        yield _failed(exc)


def _failed(exc: OrchestratorError, shaped: _Response | None = None) -> dict[str, Any]:
    error = from_exception(exc)
    body = {"code": error.openai_code or error.kind, "message": error.message}
    if shaped is None:
        return {"type": "error", **body, "param": None}
    return {"type": "response.failed", "response": shaped.object("failed", [], error=body)}


def _numbered() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Numbers the events of one stream in order (`sequence_number`)."""
    sequence = itertools.count()

    def event(payload: dict[str, Any]) -> dict[str, Any]:
        payload["sequence_number"] = next(sequence)
        return payload

    return event


class _Part(NamedTuple):
    """One step of a translated answer's stream, whatever its native format: an output item
    starting (`value` None for a message, `(call_id, name)` for a function call), text or
    arguments for it (`value`), its end, the usage so far, or the finish reason (OpenAI's)."""

    kind: Literal["start", "delta", "stop", "usage", "finish"]
    key: Any = None  # the item, as the native stream names it
    value: Any = None


async def _anthropic_parts(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[_Part]:
    """The parts of a stream of Anthropic Messages events: each text or `tool_use` block an
    item (thinking and the like are skipped)."""
    usage = Usage()
    async for piece in chunks:
        native = piece.native or {}
        kind, index = native.get("type"), native.get("index")
        if kind == "message_start":
            usage = usage_of(native.get("message", {}).get("usage"))
            yield _Part("usage", value=usage)
        elif kind == "content_block_start":
            block = native.get("content_block") or {}
            if block.get("type") == "text":
                yield _Part("start", index)
            elif block.get("type") == "tool_use":
                yield _Part("start", index, (block["id"], block["name"]))
        elif kind == "content_block_delta":
            delta = native.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield _Part("delta", index, delta["text"])
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                yield _Part("delta", index, delta["partial_json"])
        elif kind == "content_block_stop":
            yield _Part("stop", index)
        elif kind == "message_delta":
            stop = (native.get("delta") or {}).get("stop_reason")
            if stop:
                yield _Part("finish", value=finish_reason(stop))
            usage = usage_of(native.get("usage"), usage)
            yield _Part("usage", value=usage)


async def _chat_parts(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[_Part]:
    """The parts of a stream of `chat.completion.chunk`s: the content one message item,
    each `tool_calls` index a function call item, all ended with the stream; the finish
    reason and usage from the provider's last chunk."""
    started: set[Any] = set()
    async for piece in chunks:
        choices = (piece.native or {}).get("choices") or [{}]
        delta = choices[0].get("delta") if isinstance(choices[0], Mapping) else None
        delta = delta if isinstance(delta, Mapping) else {}
        if isinstance(delta.get("content"), str) and delta["content"]:
            if "text" not in started:
                started.add("text")
                yield _Part("start", "text")
            yield _Part("delta", "text", delta["content"])
        for call in delta.get("tool_calls") or ():
            key = ("call", call.get("index", 0))
            function = call.get("function") or {}
            if key not in started:
                started.add(key)
                call_id = call.get("id") or "call_" + uuid.uuid4().hex
                yield _Part("start", key, (call_id, function.get("name") or ""))
            if function.get("arguments"):
                yield _Part("delta", key, function["arguments"])
        if piece.usage is not None:
            yield _Part("usage", value=piece.usage)
        if piece.finish_reason is not None:
            yield _Part("finish", value=piece.finish_reason)


async def _item_events(
    parts: AsyncIterator[_Part], shaped: _Response
) -> AsyncIterator[dict[str, Any]]:
    """The Responses events for a translated answer's `parts`: each text item a `message`
    item with `output_text` deltas, each call a `function_call` item with its arguments in
    `function_call_arguments` deltas (an item the stream leaves open ends with it), then
    `response.completed` (or `.incomplete`) with usage."""
    event = _numbered()
    started = shaped.object("in_progress", [])
    yield event({"type": "response.created", "response": started})
    yield event({"type": "response.in_progress", "response": started})
    output: list[dict[str, Any]] = []
    open_items: dict[Any, tuple[dict[str, Any], list[str], dict[str, Any]]] = {}
    usage = Usage()
    finish: str | None = None
    try:
        async with aclosing(parts):  # type: ignore[type-var]
            async for part in parts:
                if part.kind == "start" and part.key not in open_items:
                    if part.value is None:
                        item_id = shaped.item_id if not output else "msg_" + uuid.uuid4().hex
                        item = _message_item(item_id, "", "in_progress")
                    else:
                        item = _call_item(*part.value, "", "in_progress")
                    where = {"item_id": item["id"], "output_index": len(output)}
                    open_items[part.key] = item, [], where
                    output.append(item)
                    yield event(
                        {
                            "type": "response.output_item.added",
                            "output_index": where["output_index"],
                            "item": item,
                        }
                    )
                    if item["type"] == "message":
                        yield event(
                            {
                                "type": "response.content_part.added",
                                **where,
                                "content_index": 0,
                                "part": _empty_part(),
                            }
                        )
                elif part.kind == "delta" and part.key in open_items:
                    item, pieces, where = open_items[part.key]
                    pieces.append(part.value)
                    if item["type"] == "message":
                        yield event(
                            {
                                "type": "response.output_text.delta",
                                **where,
                                "content_index": 0,
                                "delta": part.value,
                                "logprobs": [],
                            }
                        )
                    else:
                        yield event(
                            {
                                "type": "response.function_call_arguments.delta",
                                **where,
                                "delta": part.value,
                            }
                        )
                elif part.kind == "stop" and part.key in open_items:
                    for done in _closed(open_items.pop(part.key), output):
                        yield event(done)
                elif part.kind == "usage":
                    usage = part.value
                elif part.kind == "finish":
                    finish = part.value
    except OrchestratorError as exc:
        yield _failed(exc, shaped)
        return
    for key in list(open_items):
        for done in _closed(open_items.pop(key), output):
            yield event(done)
    status = _status_of(finish)
    done_kind = "response.incomplete" if status == "incomplete" else "response.completed"
    yield event({"type": done_kind, "response": shaped.object(status, output, usage)})


def _closed(
    opened: tuple[dict[str, Any], list[str], dict[str, Any]], output: list[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """The events ending an open item; the finished item takes its place in `output`."""
    item, pieces, where = opened
    for done in _item_done(item, "".join(pieces), where):
        yield done
    output[where["output_index"]] = done["item"]


def _empty_part() -> dict[str, Any]:
    return {"type": "output_text", "text": "", "annotations": [], "logprobs": []}


def _item_done(
    item: Mapping[str, Any], content: str, where: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The events closing an output item whose text (or JSON arguments) is `content`; the
    last one carries the finished item."""
    if item["type"] == "message":
        finished = _message_item(item["id"], content, "completed")
        part = {**where, "content_index": 0}
        yield {"type": "response.output_text.done", **part, "text": content, "logprobs": []}
        yield {"type": "response.content_part.done", **part, "part": finished["content"][0]}
    else:
        finished = {**item, "status": "completed", "arguments": content or "{}"}
        yield {
            "type": "response.function_call_arguments.done",
            **where,
            "arguments": finished["arguments"],
        }
    yield {
        "type": "response.output_item.done",
        "output_index": where["output_index"],
        "item": finished,
    }


async def _events(
    chunks: AsyncIterator[StreamChunk], shaped: _Response
) -> AsyncIterator[dict[str, Any]]:
    event = _numbered()
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
    yield event({"type": "response.content_part.added", **where, "part": _empty_part()})
    parts: list[str] = []
    usage: Usage | None = None
    finish: str | None = None
    try:
        async for chunk in chunks:
            if chunk.text:
                parts.append(chunk.text)
                yield event(
                    {
                        "type": "response.output_text.delta",
                        **where,
                        "delta": chunk.text,
                        "logprobs": [],
                    }
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
