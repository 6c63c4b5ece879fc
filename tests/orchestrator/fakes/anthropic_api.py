"""`FakeAnthropic`: speaks the Anthropic Messages API (`POST /v1/messages`), streaming included."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .faults import Fail, StreamError
from .upstream import Event, FakeUpstream, count_words, word_chunks

_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


TOOL_INPUT = {"path": "src/main.py", "lines": [1, 20]}


def _wants_tool(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content")
    answered = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    return bool(body.get("tools")) and not answered


def _tool_use(body: Mapping[str, Any], n: int) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_fake_{n}", "name": body["tools"][0]["name"]}


class FakeAnthropic(FakeUpstream):
    """Answers `reply` one word per token; stops at `max_tokens` with `stop_reason: max_tokens`.

    Input tokens are the words in `system` and the messages. The stream is the exact event
    sequence of the real API: message_start, content_block_start, ping, content_block_delta…,
    content_block_stop, message_delta (with usage), message_stop.

    With `tools` (and no `tool_result` in the last message) the answer is the reply text, then
    a `tool_use` of the first tool with input `TOOL_INPUT` (`stop_reason: tool_use`), streamed
    as `input_json_delta`s. `POST /v1/messages/count_tokens` answers `input_tokens`.
    `cache_usage` (e.g. `{"cache_read_input_tokens": 1000}`) is added to every answer's usage.
    """

    routes = ("/v1/messages", "/v1/messages/count_tokens")
    get_routes = ("/v1/models",)
    cache_usage: Mapping[str, int] = {}

    def get_body(self, path: str) -> Mapping[str, Any]:
        model = {"type": "model", "id": "claude-sonnet-5-5", "display_name": "Claude Sonnet"}
        return {"data": [model], "has_more": False, "first_id": model["id"]}

    def error_body(self, fail: Fail) -> Mapping[str, Any]:
        kind = _ERROR_TYPE.get(fail.status, "api_error" if fail.status >= 500 else "error")
        return {"type": "error", "error": {"type": kind, "message": fail.message}}

    def error_event(self, fault: StreamError) -> bytes:
        body = self.error_body(Fail(status=fault.status, message=fault.message))
        return _sse("error", body)

    def keepalive_event(self) -> bytes:
        return _sse("ping", {"type": "ping"})

    def malformed_event(self) -> bytes:
        return b"event: content_block_delta\ndata: {not json\n\n"

    def _tokens(self, body: Mapping[str, Any]) -> tuple[list[str], str, int]:
        chunks = word_chunks(self.reply)
        max_tokens = int(body.get("max_tokens", len(chunks)))
        stop_reason = "max_tokens" if len(chunks) > max_tokens else "end_turn"
        system = body.get("system")
        words = count_words(system if isinstance(system, str) else None)
        words += count_words(*(str(m.get("content", "")) for m in body.get("messages", ())))
        return chunks[:max_tokens], stop_reason, words

    def _message(self, body: Mapping[str, Any], n: int) -> dict[str, Any]:
        return {
            "id": f"msg_fake_{n}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-fake"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }

    async def _respond(self, request: web.Request, body: Mapping[str, Any], fault: Any) -> Any:
        if request.path.endswith("/count_tokens") and fault is None:
            return web.json_response({"input_tokens": self._tokens(body)[2]})
        return await super()._respond(request, body, fault)

    def answer_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        chunks, stop_reason, input_tokens = self._tokens(body)
        message = self._message(body, self.request_count)
        message["content"] = [{"type": "text", "text": "".join(chunks)}]
        message["stop_reason"] = stop_reason
        if _wants_tool(body):
            message["content"].append({**_tool_use(body, self.request_count), "input": TOOL_INPUT})
            message["stop_reason"] = "tool_use"
        message["usage"] = {
            "input_tokens": input_tokens,
            "output_tokens": len(chunks),
            **self.cache_usage,
        }
        return message

    def answer_events(self, body: Mapping[str, Any]) -> list[Event]:
        chunks, stop_reason, input_tokens = self._tokens(body)
        message = self._message(body, self.request_count)
        message["usage"] = {"input_tokens": input_tokens, "output_tokens": 1, **self.cache_usage}
        events = [
            Event(data=_sse("message_start", {"type": "message_start", "message": message})),
            Event(
                data=_sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            ),
            Event(data=_sse("ping", {"type": "ping"})),
        ]
        events += [
            Event(
                data=_sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": chunk},
                    },
                ),
                text=True,
            )
            for chunk in chunks
        ]
        events.append(
            Event(data=_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        )
        if _wants_tool(body):
            stop_reason = "tool_use"
            block = {**_tool_use(body, self.request_count), "input": {}}
            partial = json.dumps(TOOL_INPUT)
            halves = (partial[: len(partial) // 2], partial[len(partial) // 2 :])
            events.append(
                Event(
                    data=_sse(
                        "content_block_start",
                        {"type": "content_block_start", "index": 1, "content_block": block},
                    )
                )
            )
            events += [
                Event(
                    data=_sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 1,
                            "delta": {"type": "input_json_delta", "partial_json": half},
                        },
                    )
                )
                for half in halves
            ]
            events.append(
                Event(data=_sse("content_block_stop", {"type": "content_block_stop", "index": 1}))
            )
        events += [
            Event(
                data=_sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {"output_tokens": len(chunks)},
                    },
                )
            ),
            Event(data=_sse("message_stop", {"type": "message_stop"})),
        ]
        return events
