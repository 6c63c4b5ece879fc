"""OpenAI Chat Completions with tools ↔ Anthropic's Messages API: the translation that lets a
tool conversation through `/v1/chat/completions` reach an Anthropic provider natively.

Request: system and developer messages become `system`; user messages user turns; an
assistant message's text and `tool_calls` become `text` and `tool_use` blocks (the call's JSON
`arguments` its `input`); `tool` messages become `tool_result` blocks of one user turn (their
`tool_call_id` the `tool_use_id`); turns of the same role in a row are merged, as the
Messages API alternates. `tools` (`function` tools) become Anthropic tools (`parameters` the
`input_schema`); `tool_choice` `auto` / `none` / `required` / a named function become `auto` /
`none` / `any` / `tool`, with `parallel_tool_calls: false` as `disable_parallel_tool_use`;
`max_completion_tokens` / `max_tokens` (else the worker's default), `temperature`, `top_p`,
`stop` and `user` (as `metadata.user_id`) carry over.

Answer: the message's text is the content, each `tool_use` block a `tool_calls` entry
(`input` as JSON `arguments`), `stop_reason` `tool_use` / `end_turn` / `max_tokens` the
finish reason `tool_calls` / `stop` / `length`. Streamed, each Messages event becomes the
`chat.completion.chunk` an OpenAI client reads: text deltas as `content`, a `tool_use` block's
start as a `tool_calls` delta with its id and name, its `input_json_delta`s as `arguments`
pieces, then the finish reason and (when asked) a usage chunk.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.providers.anthropic import DEFAULT_MAX_TOKENS, usage_of
from orchestrator.request import StreamChunk, Usage
from orchestrator.server.http_errors import RequestRejected, bad_request, from_exception
from orchestrator.server.streaming import sse

__all__ = [
    "anthropic_tool_choice",
    "anthropic_tools",
    "append_turn",
    "assemble",
    "chat_chunks",
    "chat_completion",
    "finish_reason",
    "function_tools",
    "messages_body",
    "tool_result",
    "tool_use",
]

_FINISH = {
    "tool_use": "tool_calls",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def _refuse(field: str, message: str) -> RequestRejected:
    return RequestRejected(bad_request(f"{field}: {message}", field=field))


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's finish reason for an Anthropic `stop_reason`."""
    return _FINISH.get(stop_reason or "end_turn", "stop")


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content if isinstance(content, list) else ()):
        if not isinstance(part, Mapping) or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, Mapping) else None
            raise _refuse(f"{where}[{i}]", f"content parts of type {kind!r} are not supported")
        parts.append(part["text"])
    return "".join(parts)


def _arguments(raw: Any, where: str) -> Any:
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise _refuse(where, "a tool call's arguments must be JSON") from None


def function_tools(tools: Any, field: str = "tools") -> list[dict[str, Any]]:
    """The functions OpenAI function tools declare, in the chat form (`{"type": "function",
    "function": {...}}`) or the Responses form (the function's fields at the top level): each
    its `name`, `parameters` (an empty object schema if none), and `description` and
    `strict` when given. Raises `RequestRejected` naming a tool of another type."""
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise _refuse(
                f"{field}[{i}].type",
                f"tools of type {kind!r} need an OpenAI provider; only function tools are "
                "translated for this one",
            )
        spec = tool.get("function", tool)
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str) or not name:
            raise _refuse(f"{field}[{i}].name", "a function tool needs a name")
        entry: dict[str, Any] = {
            "name": name,
            "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(spec.get("description"), str):
            entry["description"] = spec["description"]
        if isinstance(spec.get("strict"), bool):
            entry["strict"] = spec["strict"]
        out.append(entry)
    return out


def anthropic_tools(tools: Any, field: str = "tools") -> list[dict[str, Any]]:
    """Anthropic tools for OpenAI function tools (`function_tools`); raises
    `RequestRejected` for a tool of another type."""
    out = []
    for spec in function_tools(tools, field):
        entry: dict[str, Any] = {"name": spec["name"], "input_schema": spec["parameters"]}
        if "description" in spec:
            entry["description"] = spec["description"]
        out.append(entry)
    return out


def anthropic_tool_choice(choice: Any, parallel: Any = None) -> dict[str, Any] | None:
    """Anthropic's `tool_choice` for OpenAI's (chat or Responses form), None for the default."""
    result: dict[str, Any] | None
    if choice is None or choice == "auto":
        result = {"type": "auto"} if parallel is False else None
    elif choice == "none":
        result = {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        spec = choice.get("function", choice)
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str):
            raise _refuse("tool_choice", "a function tool_choice needs the function's name")
        result = {"type": "tool", "name": name}
    else:
        raise _refuse("tool_choice", f"unsupported tool_choice {choice!r}")
    if parallel is False and result is not None and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add `blocks` as a `role` turn, merged into the last turn when it has the same role."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def tool_use(call_id: str, name: str, arguments: Any, where: str) -> dict[str, Any]:
    """A `tool_use` block for a function call (its `arguments`: JSON text or an object)."""
    return {"type": "tool_use", "id": call_id, "name": name, "input": _arguments(arguments, where)}


def tool_result(call_id: str, output: str) -> dict[str, Any]:
    """A `tool_result` block answering the call `call_id`."""
    return {"type": "tool_result", "tool_use_id": call_id, "content": output}


def messages_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic Messages body for a Chat Completions body (see the module docstring);
    raises `RequestRejected` naming a field it cannot carry."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(data.get("messages") or ()):
        where = f"messages[{i}]"
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content"), f"{where}.content"))
        elif role == "user":
            text = _text(m.get("content"), f"{where}.content")
            append_turn(turns, "user", [{"type": "text", "text": text}] if text else [])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = _text(m.get("content"), f"{where}.content")
            if text:
                blocks.append({"type": "text", "text": text})
            for j, call in enumerate(m.get("tool_calls") or ()):
                fn = call.get("function") or {}
                blocks.append(
                    tool_use(
                        str(call.get("id")),
                        str(fn.get("name")),
                        fn.get("arguments"),
                        f"{where}.tool_calls[{j}]",
                    )
                )
            append_turn(turns, "assistant", blocks)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str):
                raise _refuse(f"{where}.tool_call_id", "a tool message needs its tool_call_id")
            append_turn(
                turns, "user", [tool_result(call_id, _text(m.get("content"), f"{where}.content"))]
            )
    if not turns:
        raise _refuse("messages", "at least one user or assistant message is needed")
    if data.get("n") not in (None, 1):
        raise _refuse("n", "only n=1 is supported")
    body = assemble(
        data, turns, system, data.get("max_completion_tokens") or data.get("max_tokens")
    )
    stop = data.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    return body


def assemble(
    data: Mapping[str, Any], turns: list[dict[str, Any]], system: list[str], max_tokens: Any
) -> dict[str, Any]:
    """The Messages body of translated `turns` and `system` parts, with the fields Chat and
    Responses bodies share: `model`, `tools`, `tool_choice` and `parallel_tool_calls`,
    `temperature`, `top_p`, `user`; `max_tokens` (None: the worker's default)."""
    body: dict[str, Any] = {
        "model": data["model"],
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if any(system):
        body["system"] = "\n\n".join(p for p in system if p)
    if data.get("tools"):
        body["tools"] = anthropic_tools(data["tools"])
    choice = anthropic_tool_choice(data.get("tool_choice"), data.get("parallel_tool_calls"))
    if choice is not None:
        body["tool_choice"] = choice
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            body[name] = data[name]
    if isinstance(data.get("user"), str) and data["user"]:
        body["metadata"] = {"user_id": data["user"]}
    return body


def _usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
    }


def chat_completion(
    message: Mapping[str, Any], *, completion_id: str, created: int
) -> dict[str, Any]:
    """The `chat.completion` for an Anthropic message."""
    text: list[str] = []
    calls = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": _usage(usage_of(message.get("usage"))),
    }


async def chat_chunks(
    chunks: AsyncIterator[StreamChunk],
    *,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The `chat.completion.chunk` SSE lines for a stream of Anthropic events, then `[DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    tool_index: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
    usage = Usage()
    stop: str | None = None
    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in chunks:
            event = piece.native or {}
            kind = event.get("type")
            if kind == "message_start":
                usage = usage_of(event.get("message", {}).get("usage"))
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    n = tool_index[event["index"]] = len(tool_index)
                    yield chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": n,
                                    "id": block["id"],
                                    "type": "function",
                                    "function": {"name": block["name"], "arguments": ""},
                                }
                            ]
                        }
                    )
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield chunk({"content": delta["text"]})
                elif delta.get("type") == "input_json_delta" and event["index"] in tool_index:
                    yield chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": tool_index[event["index"]],
                                    "function": {"arguments": delta.get("partial_json", "")},
                                }
                            ]
                        }
                    )
            elif kind == "message_delta":
                stop = (event.get("delta") or {}).get("stop_reason") or stop
                usage = usage_of(event.get("usage"), usage)
    except OrchestratorError as exc:
        yield sse(from_exception(exc).body_for("openai"))
        return
    yield chunk({}, finish_reason(stop))
    if include_usage:
        yield sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(usage),
            }
        )
    yield sse("[DONE]")
