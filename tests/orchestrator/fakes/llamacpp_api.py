"""`FakeLlamaCpp`: speaks llama.cpp's native `POST /completion` (JSON, or SSE with `stream`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .faults import Fail, StreamError
from .upstream import Event, FakeUpstream, count_words, word_chunks

_ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}


def _data(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


class FakeLlamaCpp(FakeUpstream):
    """Answers `reply` one word per token, up to `n_predict`; input tokens are the prompt's words.

    Streams send `data: {"content": <word>, "stop": false}` per token, then one final event with
    `"stop": true`, `stop_type`, `tokens_evaluated` and `tokens_predicted`, as llama-server does.
    """

    routes = ("/completion",)
    get_routes = ("/health",)

    def get_body(self, path: str) -> Mapping[str, Any]:
        return {"status": "ok"}

    def error_body(self, fail: Fail) -> Mapping[str, Any]:
        kind = _ERROR_TYPE.get(fail.status, "server_error")
        return {"error": {"code": fail.status, "message": fail.message, "type": kind}}

    def error_event(self, fault: StreamError) -> bytes:
        return _data(self.error_body(Fail(status=fault.status, message=fault.message)))

    def _tokens(self, body: Mapping[str, Any]) -> tuple[list[str], str, int]:
        chunks = word_chunks(self.reply)
        limit = int(body.get("n_predict", -1))
        if 0 <= limit < len(chunks):
            return chunks[:limit], "limit", count_words(str(body.get("prompt", "")))
        return chunks, "eos", count_words(str(body.get("prompt", "")))

    def _final(self, body: Mapping[str, Any], content: str) -> dict[str, Any]:
        chunks, stop_type, input_tokens = self._tokens(body)
        return {
            "content": content,
            "stop": True,
            "prompt": body.get("prompt", ""),  # llama-server echoes the prompt at the end
            "model": "/models/fake.gguf",
            "tokens_evaluated": input_tokens,
            "tokens_predicted": len(chunks),
            "stop_type": stop_type,
            "stopped_eos": stop_type == "eos",
            "stopped_limit": stop_type == "limit",
            "stopping_word": "",
            "timings": {"prompt_n": input_tokens, "predicted_n": len(chunks)},
        }

    def answer_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        chunks, _, _ = self._tokens(body)
        return self._final(body, "".join(chunks))

    def answer_events(self, body: Mapping[str, Any]) -> list[Event]:
        chunks, _, _ = self._tokens(body)
        events = [Event(data=_data({"content": c, "stop": False}), text=True) for c in chunks]
        events.append(Event(data=_data(self._final(body, ""))))
        return events
