"""`LlamaCppWorker`: llama.cpp's native `/completion` endpoint over the pooled `HttpClient`.

For llama.cpp's OpenAI-compatible `/v1/chat/completions`, use `OpenAIWorker(base_url=...)`;
this worker is for servers where the raw endpoint (and our own chat template) is wanted.
Text requests go to `/completion`, rendered through the template. A native Chat Completions
body (one that uses tools, from `/v1/chat/completions` or translated from `/v1/responses`)
goes as it came to the same server's `/v1/chat/completions`, which llama-server speaks (tool
calls need it started with `--jinja`): a template of ours could not render tool definitions
the model was trained on.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator import codec
from orchestrator.errors import ProviderError
from orchestrator.providers._http import (
    HOP_HEADERS,
    CallTimer,
    check_worker_args,
    connection_error,
    describe_body,
    status_error,
    truncated_stream_error,
)
from orchestrator.providers.http_client import HttpClient, HttpResponse, TransportError
from orchestrator.request import (
    NATIVE_OPENAI_CHAT,
    Completion,
    InferenceRequest,
    Message,
    StreamChunk,
    Usage,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatTemplate:
    """How a system prompt and chat turns become one prompt string.

    Each turn format holds `{content}`; `generation_prompt` opens the assistant's turn and
    `stop` ends generation at the close of that turn. The default is ChatML.
    """

    system: str = "<|im_start|>system\n{content}<|im_end|>\n"
    user: str = "<|im_start|>user\n{content}<|im_end|>\n"
    assistant: str = "<|im_start|>assistant\n{content}<|im_end|>\n"
    generation_prompt: str = "<|im_start|>assistant\n"
    stop: tuple[str, ...] = ("<|im_end|>",)

    def __post_init__(self) -> None:
        for field_name in ("system", "user", "assistant"):
            if "{content}" not in getattr(self, field_name):
                raise ValueError(f"{field_name} must contain '{{content}}'")

    def render(self, system: str | None, messages: Sequence[Message]) -> str:
        """The prompt for `system` and `messages`, ending with the assistant's open turn."""
        parts = [] if system is None else [self.system.replace("{content}", system)]
        for message in messages:
            turn = self.user if message.role == "user" else self.assistant
            parts.append(turn.replace("{content}", message.content))
        parts.append(self.generation_prompt)
        return "".join(parts)


CHATML = ChatTemplate()


class LlamaCppWorker:
    """A `Worker` for a llama.cpp server's `/completion` endpoint (JSON, or SSE when streaming).

    `base_url` is the server root (e.g. `http://127.0.0.1:8080`). `model` is only the name we
    report (llama.cpp serves the one model it loaded). `api_key` is sent as a bearer token for
    servers started with `--api-key`. One connection pool (`HttpClient`) serves every call.
    Takes native Chat Completions bodies (`native_formats`): posted to `/v1/chat/completions`,
    the answer (or each streamed chunk) returned in `native` as the server sent it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "llama.cpp",
        name: str = "llamacpp",
        api_key: str | None = None,
        template: ChatTemplate = CHATML,
        stall_timeout_s: float = 30.0,
        max_connections: int = 1000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be a non-empty string or None")
        check_worker_args(
            model=model,
            name=name,
            stall_timeout_s=stall_timeout_s,
            max_connections=max_connections,
        )
        self.name = name
        self.default_model = model
        self.native_formats = frozenset({NATIVE_OPENAI_CHAT})
        self._url = base_url.rstrip("/") + "/completion"
        self._chat_url = base_url.rstrip("/") + "/v1/chat/completions"
        self._api_key = api_key
        self._template = template
        self._stall_timeout_s = stall_timeout_s
        self._wall_clock = wall_clock
        self._http = HttpClient(max_connections=max_connections)

    def __repr__(self) -> str:
        return f"LlamaCppWorker(name={self.name!r}, url={self._url!r})"

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        """One `/completion` call (`/v1/chat/completions` for a native body); raises
        `ProviderError` on failure or after `timeout_s`."""
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        if request.native is not None:
            return await self._complete_chat(request, timer)
        payload = await self._answer(self._post(request, stream=False), timer)
        return Completion(
            text=str(payload.get("content", "")),
            usage=_usage(payload),
            model=self.default_model,
            finish_reason=_finish_reason(payload),
        )

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        """Yield one chunk per `data:` event with content, then a final chunk with finish and usage.

        Raises a retryable `ProviderError` if the stream stalls, runs past `timeout_s`, or ends
        before an event with `stop: true`. A native body streams `/v1/chat/completions`' chunks
        instead.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        if request.native is not None:
            async for chunk in self._stream_chat(request, timer):
                yield chunk
            return
        index = 0
        final: Mapping[str, Any] | None = None
        async for event in self._events(self._post(request, stream=True), timer):
            if final is not None:
                continue  # read on to the end of the body, so the connection can be reused
            content = str(event.get("content", ""))
            if content:
                yield StreamChunk(text=content, index=index)
                index += 1
            if event.get("stop"):
                final = event
        if final is None:
            raise truncated_stream_error(self.name, index)
        yield StreamChunk(
            text="", index=index, finish_reason=_finish_reason(final), usage=_usage(final)
        )

    async def _complete_chat(self, request: InferenceRequest, timer: CallTimer) -> Completion:
        body = _chat_body(request, stream=False)
        answer = await self._answer(self._post_json(self._chat_url, body), timer)
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderError(self.name, "response has no choices", retryable=True)
        message = choices[0].get("message")
        text = message.get("content") if isinstance(message, dict) else None
        return Completion(
            text=text if isinstance(text, str) else "",
            usage=_chat_usage(answer.get("usage")),
            model=self.default_model,
            finish_reason=choices[0].get("finish_reason"),
            native=dict(answer),
        )

    async def _stream_chat(
        self, request: InferenceRequest, timer: CallTimer
    ) -> AsyncIterator[StreamChunk]:
        """The server's chat chunks, each in `native` (the usage chunk we asked for only if
        the client asked too), then a final chunk with the finish reason and usage."""
        body = _chat_body(request, stream=True)
        client_options = (request.native or {}).get("stream_options")
        client_wants_usage = isinstance(client_options, Mapping) and bool(
            client_options.get("include_usage")
        )
        index, finish, usage = 0, None, None
        async for event in self._events(self._post_json(self._chat_url, body), timer):
            if event.get("usage"):
                usage = _chat_usage(event["usage"])
            choices = event.get("choices") or []
            if not choices and not client_wants_usage:
                continue  # the usage chunk we asked for, not the client
            first = choices[0] if choices and isinstance(choices[0], dict) else {}
            delta = first.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            finish = first.get("finish_reason") or finish
            yield StreamChunk(
                text=text if isinstance(text, str) else "", index=index, native=dict(event)
            )
            index += 1
        if finish is None:
            raise truncated_stream_error(self.name, index)
        yield StreamChunk(text="", index=index, finish_reason=finish, usage=usage or Usage())

    async def _answer(self, post: Awaitable[HttpResponse], timer: CallTimer) -> Mapping[str, Any]:
        """The JSON object one non-streamed call answered; `ProviderError` for a failed call,
        an error status or an error payload."""
        try:
            response = await timer.within(post)
            try:
                await self._raise_for_status(response, timer)
                raw = await timer.within(response.read())
            finally:
                response.release()
            payload = _json_object(raw)
        except TransportError as exc:
            raise connection_error(
                self.name, "request failed", exc, secrets=self._secrets
            ) from None
        except ValueError as exc:
            raise connection_error(self.name, "bad response", exc, secrets=self._secrets) from None
        if "error" in payload:
            raise self._error_payload(payload)
        return payload

    async def _events(
        self, post: Awaitable[HttpResponse], timer: CallTimer
    ) -> AsyncIterator[Mapping[str, Any]]:
        """The JSON objects of a streamed call's events, to the end of the body (or `[DONE]`);
        `ProviderError` for a failed call, an error status, an error event or a bad event."""
        try:
            response = await timer.within(post)
            try:
                await self._raise_for_status(response, timer)
                # Lines are split here, not with readline(): llama.cpp's final event echoes the
                # whole prompt and can outgrow a reader's line limit. Reading on to the end of
                # the body (past `[DONE]` too) lets the connection be reused.
                pending = bytearray()
                done = False
                while data := await timer.within(response.readany(), stall=True):
                    pending += data
                    *lines, rest = pending.split(b"\n")
                    pending = bytearray(rest)
                    for line in lines:
                        if done or line.strip() == b"data: [DONE]":
                            done = True
                            continue
                        event = _sse_payload(bytes(line))
                        if event is None:
                            continue
                        if "error" in event:
                            raise self._error_payload(event)
                        yield event
            finally:
                response.release()
        except TransportError as exc:
            raise connection_error(
                self.name, "connection lost mid-stream", exc, secrets=self._secrets
            ) from None
        except ValueError as exc:
            raise connection_error(self.name, "bad event", exc, secrets=self._secrets) from None

    async def aclose(self) -> None:
        """Close the pooled upstream connections."""
        await self._http.aclose()

    @property
    def _secrets(self) -> tuple[str | None]:
        return (self._api_key,)

    async def _post(self, request: InferenceRequest, *, stream: bool) -> HttpResponse:
        body: dict[str, Any] = {
            "prompt": self._template.render(request.system, request.messages_or_prompt),
            # -1: no limit of our own (the client gave none)
            "n_predict": request.max_tokens if request.max_tokens is not None else -1,
            "stream": stream,
            "cache_prompt": True,
            "stop": list(self._template.stop),
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return await self._post_json(self._url, body)

    async def _post_json(self, url: str, body: Mapping[str, Any]) -> HttpResponse:
        headers = {"content-type": "application/json", **HOP_HEADERS}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return await self._http.post(url, codec.dumps(body), headers)

    async def _raise_for_status(self, response: HttpResponse, timer: CallTimer) -> None:
        if response.status < 400:
            return
        raw = await timer.within(response.read())
        try:
            detail = describe_body(json.loads(raw))
        except ValueError:
            detail = raw.decode("utf-8", "replace")[:500]
        raise status_error(
            self.name,
            response.status,
            detail,
            response.headers,
            secrets=self._secrets,
            now=self._wall_clock,
        )

    def _error_payload(self, payload: Mapping[str, Any]) -> ProviderError:
        error = payload.get("error")
        code = error.get("code") if isinstance(error, Mapping) else None
        status = code if isinstance(code, int) else 500
        return status_error(self.name, status, describe_body(payload), {}, secrets=self._secrets)


def _json_object(raw: bytes) -> Mapping[str, Any]:
    payload = json.loads(raw)
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _sse_payload(line: bytes) -> Mapping[str, Any] | None:
    """The JSON object of a `data:` (or llama.cpp's `error:`) line; None for other lines."""
    text = line.decode("utf-8").strip()
    for prefix in ("data:", "error:"):
        if text.startswith(prefix):
            payload = _json_object(text[len(prefix) :].strip().encode())
            if prefix == "error:" and "error" not in payload:
                payload = {"error": payload}
            return payload
    return None


def _usage(payload: Mapping[str, Any]) -> Usage:
    timings = payload.get("timings")
    timings = timings if isinstance(timings, Mapping) else {}
    return Usage(
        input_tokens=int(payload.get("tokens_evaluated", timings.get("prompt_n", 0)) or 0),
        output_tokens=int(payload.get("tokens_predicted", timings.get("predicted_n", 0)) or 0),
    )


def _chat_body(request: InferenceRequest, *, stream: bool) -> dict[str, Any]:
    """A native Chat Completions body as the client sent it; streamed, with the usage chunk
    asked for (the call is billed by it)."""
    assert request.native is not None
    body = {k: v for k, v in request.native.items() if k != "stream"}
    if stream:
        body["stream"] = True
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, Mapping) else {}),
            "include_usage": True,
        }
    return body


def _chat_usage(usage: Any) -> Usage:
    if not isinstance(usage, Mapping):
        return Usage()
    return Usage(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


def _finish_reason(payload: Mapping[str, Any]) -> str:
    if payload.get("stop_type") == "limit" or payload.get("stopped_limit"):
        return "length"
    return "stop"
