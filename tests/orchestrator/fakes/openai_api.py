"""`FakeOpenAI`: speaks OpenAI chat completions (`POST /v1/chat/completions`), streaming too."""

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


class FakeOpenAI(FakeUpstream):
    """Answers `reply` one word per token; stops at the token limit with `finish_reason: length`.

    Point the SDK at `url + "/v1"` (`api_url`). Input tokens are the words of all messages.
    Streams send a role chunk, one chunk per word, a finish chunk, a usage chunk (only when
    `stream_options.include_usage` is set, as the real API does) and `data: [DONE]`.
    With `usage_in_stream=False` it behaves like a server that ignores `include_usage`.
    """

    routes = ("/v1/chat/completions",)

    def __init__(self, *, reply: str = "Hello from the fake upstream.") -> None:
        super().__init__(reply=reply)
        self.usage_in_stream = True

    @property
    def api_url(self) -> str:
        """The base URL to give the OpenAI SDK."""
        return self.url + "/v1"

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
        chunks, finish_reason, input_tokens = self._tokens(body)
        return {
            "id": f"chatcmpl-fake{self.request_count}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "gpt-fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(chunks)},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self._usage(input_tokens, len(chunks)),
        }

    def answer_events(self, body: Mapping[str, Any]) -> list[Event]:
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
        events.append(Event(data=_data(chunk({}, finish_reason))))
        if with_usage:
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = self._usage(input_tokens, len(chunks))
            events.append(Event(data=_data(final)))
        events.append(Event(data=_data("[DONE]")))
        return events
