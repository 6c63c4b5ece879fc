"""`FakeOpenAI`: speaks OpenAI chat completions (`POST /v1/chat/completions`) and the Responses
API (`POST /v1/responses`), streaming too."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .faults import Fail, StreamError
from .upstream import Event, FakeUpstream, count_words, word_chunks

_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_denied",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


def _data(payload: Mapping[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def _event(payload: Mapping[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


FUNCTION_ARGUMENTS = '{"path": "src/main.py"}'
"""The arguments of the function call a `FakeOpenAI` with `call_tools` makes."""


def _input_texts(body: Mapping[str, Any]) -> list[str]:
    """Every text of a Responses body's `instructions` and `input` items."""
    texts = [str(body.get("instructions") or "")]
    items = body.get("input")
    if isinstance(items, str):
        return [*texts, items]
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            continue
        content = item.get("content", item.get("output", ""))
        if isinstance(content, str):
            texts.append(content)
        for part in content if isinstance(content, list) else ():
            if isinstance(part, Mapping):
                texts.append(str(part.get("text", "")))
    return texts


def _function_tool(body: Mapping[str, Any]) -> str | None:
    """The first function tool's name, unless the last input item already answers a call."""
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    if isinstance(last, Mapping) and last.get("type") == "function_call_output":
        return None
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping) and tool.get("type") == "function":
            return str(tool.get("name"))
    return None


def _chat_function_tool(body: Mapping[str, Any]) -> str | None:
    """The first Chat Completions function tool's name, unless the last message is a tool
    result (the conversation already answered the call)."""
    messages = body.get("messages") or []
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "tool":
        return None
    for tool in body.get("tools") or ():
        if isinstance(tool, Mapping) and tool.get("type") == "function":
            return str((tool.get("function") or {}).get("name"))
    return None


class FakeOpenAI(FakeUpstream):
    """Answers `reply` one word per token; stops at the token limit with `finish_reason: length`.

    Point the SDK at `url + "/v1"` (`api_url`). Input tokens are the words of all messages.
    Streams send a role chunk, one chunk per word, a finish chunk, a usage chunk (only when
    `stream_options.include_usage` is set, as the real API does) and `data: [DONE]`.
    With `usage_in_stream=False` it behaves like a server that ignores `include_usage`.

    A Responses body (one with `input`) gets a `response` object (one `message` output item),
    or streamed, the real API's event sequence: `response.created`, `response.in_progress`,
    `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`
    per word, `response.output_text.done`, `response.content_part.done`,
    `response.output_item.done`, `response.completed` (with usage; `response.incomplete` when
    cut at `max_output_tokens`). `cached_tokens` of the input are reported as cached in usage.
    With `call_tools` set, a body offering a function tool (whose last input item is not a
    `function_call_output`) is answered with a `function_call` of that tool after the text,
    with `FUNCTION_ARGUMENTS`.
    """

    routes = ("/v1/chat/completions", "/v1/responses")
    get_routes = ("/v1/models",)

    def __init__(self, *, reply: str = "Hello from the fake upstream.") -> None:
        super().__init__(reply=reply)
        self.usage_in_stream = True
        self.call_tools = False
        self.cached_tokens = 0

    @property
    def api_url(self) -> str:
        """The base URL to give the OpenAI SDK."""
        return self.url + "/v1"

    def get_body(self, path: str) -> Mapping[str, Any]:
        model = {"id": "gpt-5.4-mini", "object": "model", "owned_by": "fake"}
        return {"object": "list", "data": [model]}

    def error_body(self, fail: Fail) -> Mapping[str, Any]:
        kind = _ERROR_TYPE.get(fail.status, "server_error" if fail.status >= 500 else "error")
        return {"error": {"message": fail.message, "type": kind, "param": None, "code": None}}

    def error_event(self, fault: StreamError) -> bytes:
        # vLLM's shape: an error object with the HTTP-like status as its numeric code.
        kind = _ERROR_TYPE.get(fault.status, "server_error")
        return _data({"error": {"message": fault.message, "type": kind, "code": fault.status}})

    def _tokens(self, body: Mapping[str, Any]) -> tuple[list[str], str, int]:
        chunks = word_chunks(self.reply)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or len(chunks)
        finish_reason = "length" if len(chunks) > int(limit) else "stop"
        words = count_words(*(str(m.get("content", "")) for m in body.get("messages", ())))
        return chunks[: int(limit)], finish_reason, words

    @staticmethod
    def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }

    def answer_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if "input" in body:
            return self._response(body, self._output(body))
        chunks, finish_reason, input_tokens = self._tokens(body)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(chunks)}
        tool = _chat_function_tool(body) if self.call_tools else None
        if tool is not None:
            message["tool_calls"] = [self._chat_tool_call(tool)]
            finish_reason = "tool_calls"
        return {
            "id": f"chatcmpl-fake{self.request_count}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "gpt-fake"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish_reason,
                 "logprobs": None}
            ],
            "usage": self._usage(input_tokens, len(chunks)),
        }

    def _chat_tool_call(self, name: str) -> dict[str, Any]:
        return {"id": f"call_fake_{self.request_count}", "type": "function",
                "function": {"name": name, "arguments": FUNCTION_ARGUMENTS}}

    def answer_events(self, body: Mapping[str, Any]) -> list[Event]:
        if "input" in body:
            return self._response_events(body)
        chunks, finish_reason, input_tokens = self._tokens(body)
        options = body.get("stream_options") or {}
        with_usage = bool(options.get("include_usage")) and self.usage_in_stream

        def chunk(delta: Mapping[str, Any], finish: str | None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": f"chatcmpl-fake{self.request_count}",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model", "gpt-fake"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                payload["usage"] = None
            return payload

        events = [Event(data=_data(chunk({"role": "assistant", "content": ""}, None)))]
        events += [Event(data=_data(chunk({"content": c}, None)), text=True) for c in chunks]
        tool = _chat_function_tool(body) if self.call_tools else None
        if tool is not None:
            call = {"index": 0, **self._chat_tool_call(tool)}
            events.append(Event(data=_data(chunk({"tool_calls": [call]}, None))))
            finish_reason = "tool_calls"
        events.append(Event(data=_data(chunk({}, finish_reason))))
        if with_usage:
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = self._usage(input_tokens, len(chunks))
            events.append(Event(data=_data(final)))
        events.append(Event(data=_data("[DONE]")))
        return events

    # --- the Responses API ------------------------------------------------------------------

    def _output(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        chunks = word_chunks(self.reply)
        limit = body.get("max_output_tokens") or len(chunks)
        n = self.request_count
        items: list[dict[str, Any]] = [
            {
                "id": f"msg_fake_{n}",
                "type": "message",
                "status": "completed" if len(chunks) <= int(limit) else "incomplete",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "".join(chunks[: int(limit)]),
                     "annotations": [], "logprobs": []}
                ],
            }
        ]
        tool = _function_tool(body) if self.call_tools else None
        if tool is not None:
            items.append(
                {
                    "id": f"fc_fake_{n}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": f"call_fake_{n}",
                    "name": tool,
                    "arguments": FUNCTION_ARGUMENTS,
                }
            )
        return items

    def _response(
        self, body: Mapping[str, Any], output: list[dict[str, Any]], status: str | None = None
    ) -> dict[str, Any]:
        text = "".join(
            part["text"] for item in output if item["type"] == "message"
            for part in item["content"]
        )
        input_tokens = count_words(*_input_texts(body)) + self.cached_tokens
        output_tokens = len(word_chunks(text)) + sum(
            1 for item in output if item["type"] == "function_call"
        )
        incomplete = any(item.get("status") == "incomplete" for item in output)
        return {
            "id": f"resp_fake_{self.request_count}",
            "object": "response",
            "created_at": 0,
            "status": status or ("incomplete" if incomplete else "completed"),
            "model": body.get("model", "gpt-fake"),
            "output": output,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }

    def _response_events(self, body: Mapping[str, Any]) -> list[Event]:
        output = self._output(body)
        final = self._response(body, output)
        started = {**final, "status": "in_progress", "output": [], "usage": None}
        seq = iter(range(1_000_000))
        events = [
            Event(data=_event({"type": kind, "sequence_number": next(seq), "response": started}))
            for kind in ("response.created", "response.in_progress")
        ]

        def add(payload: dict[str, Any], text: bool = False) -> None:
            events.append(Event(data=_event({**payload, "sequence_number": next(seq)}), text=text))

        for index, item in enumerate(output):
            if item["type"] != "message":
                add({"type": "response.output_item.added", "output_index": index, "item": item})
                add({"type": "response.output_item.done", "output_index": index, "item": item})
                continue
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            add({"type": "response.output_item.added", "output_index": index,
                 "item": {**item, "status": "in_progress", "content": []}})
            add({"type": "response.content_part.added", **where,
                 "part": {**part, "text": ""}})
            for word in word_chunks(part["text"]):
                add({"type": "response.output_text.delta", **where, "delta": word,
                     "logprobs": []}, text=True)
            add({"type": "response.output_text.done", **where, "text": part["text"],
                 "logprobs": []})
            add({"type": "response.content_part.done", **where, "part": part})
            add({"type": "response.output_item.done", "output_index": index, "item": item})
        done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        add({"type": done, "response": final})
        return events
