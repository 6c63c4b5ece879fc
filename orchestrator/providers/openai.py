"""`OpenAIWorker`: chat completions through the official `openai` SDK over aiohttp.

With `base_url` it serves any OpenAI-compatible server: vLLM, llama.cpp's `llama-server`.
Native Responses API bodies (`POST /v1/responses`, what Codex sends) go to the upstream as
they came, and its answer, or every one of its stream events, comes back as it sent them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal

import httpx2  # the SDK's HTTP layer: its Limits, and errors the SDK lets through
import openai

from orchestrator.errors import ProviderError
from orchestrator.providers._http import (
    HOP_HEADERS,
    OPENAI_API_URL,
    CallTimer,
    check_worker_args,
    connection_error,
    describe_body,
    stalled_error,
    status_error,
    truncated_stream_error,
)
from orchestrator.request import (
    NATIVE_OPENAI_CHAT,
    NATIVE_OPENAI_RESPONSES,
    OPENAI_CLIENT_HEADERS,
    Completion,
    InferenceRequest,
    StreamChunk,
    Usage,
)

DEFAULT_MODEL = "gpt-5.4-mini"

# Local servers (llama.cpp, vLLM) accept any key unless started with one; the SDK needs some.
_NO_KEY = "sk-no-key-required"

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

# A Responses stream ends with one of these; `response.failed` carries the error instead.
_RESPONSE_DONE = {"response.completed": "stop", "response.incomplete": "length"}
# The error codes of a failed response or an `error` event, as the HTTP statuses they mean.
_STATUS_OF_CODE = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "server_is_overloaded": 503,
    "invalid_prompt": 400,
    "context_length_exceeded": 400,
}


def _chat_usage(usage: Any) -> Usage:
    """`Usage` from a Chat Completions `usage` object (cached prompt tokens are within
    `prompt_tokens`)."""
    usage = usage if isinstance(usage, Mapping) else {}
    return Usage(input_tokens=int(usage.get("prompt_tokens") or 0),
                 output_tokens=int(usage.get("completion_tokens") or 0))


def responses_usage(usage: Mapping[str, Any] | None) -> Usage:
    """`Usage` from a Responses API `usage` object, whose `input_tokens` include the cached
    ones (`input_tokens_details.cached_tokens`): those are billed as cache reads."""
    usage = usage or {}
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    cached = cached if isinstance(cached, int) else 0
    total = usage.get("input_tokens")
    total = total if isinstance(total, int) else 0
    output = usage.get("output_tokens")
    return Usage(
        input_tokens=max(0, total - cached),
        cache_read_input_tokens=cached,
        output_tokens=output if isinstance(output, int) else 0,
    )


def response_text(response: Mapping[str, Any]) -> str:
    """The text of a Responses API `response` object: its messages' `output_text` parts."""
    parts = []
    for item in response.get("output") or ():
        if isinstance(item, Mapping) and item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, Mapping) and part.get("type") == "output_text":
                    parts.append(str(part.get("text") or ""))
    return "".join(parts)


# What a native stream may fail with once it started (see `_native_stream_failure`).
_NATIVE_STREAM_FAILURES = (
    openai.APIError, httpx2.HTTPError, json.JSONDecodeError, AttributeError, TypeError,
)

class _RawEvents(openai.AsyncStream[object]):
    """Every stream event as the JSON the upstream sent (the SDK's own stream would parse it
    into its types, and a native client is owed the events as they came)."""

    async def __stream__(self) -> AsyncIterator[object]:
        try:
            async for sse in self._iter_events():  # the SDK's hook for subclasses
                if sse.data.startswith("[DONE]"):
                    break
                if sse.data:
                    yield sse.json()
        finally:
            await self.response.aclose()


class OpenAIWorker:
    """A `Worker` for the Chat Completions API of OpenAI or an OpenAI-compatible server.

    `api_key` is required for OpenAI itself and optional with `base_url` (a local server).
    `max_tokens_field` names the request's token limit: OpenAI wants `max_completion_tokens`,
    older compatible servers only know `max_tokens` (the default when `base_url` is given).
    `stream_usage` asks for usage in the last stream chunk (`stream_options.include_usage`);
    turn it off for a server that rejects it, and the final chunk's `usage` is then None.
    `stall_timeout_s` bounds how long a stream may send no bytes at all (keep-alive comments
    count). One aiohttp session is shared by every call; the SDK's own retries are off.

    Takes native Responses API bodies (`native_formats`): sent to `POST /responses` as given
    (with the client's `openai-beta` and `x-openai-*` headers), answered with the JSON the
    upstream sent; streamed, one chunk per event, the last `response.completed` (or
    `response.incomplete`) with finish reason and usage; `response.failed` and `error` events
    raise `ProviderError` with the status their code stands for. Takes native Chat Completions
    bodies too (a client's tools and `tool_choice`): sent to `POST /chat/completions` as given,
    answered and streamed as the upstream sent them (a stream is asked for its usage, and
    that chunk is passed on only if the client asked for it too).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        name: str = "openai",
        max_tokens_field: MaxTokensField | None = None,
        stream_usage: bool = True,
        stall_timeout_s: float = 30.0,
        max_connections: int = 1000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise ValueError("api_key must be a non-empty string or None")
        if api_key is None and base_url is None:
            raise ValueError("api_key is required unless base_url points at a local server")
        check_worker_args(
            model=model, name=name, stall_timeout_s=stall_timeout_s,
            max_connections=max_connections,
        )
        if max_tokens_field not in (None, "max_tokens", "max_completion_tokens"):
            raise ValueError(
                "max_tokens_field must be 'max_tokens' or 'max_completion_tokens', "
                f"got {max_tokens_field!r}"
            )
        self.name = name
        self.default_model = model
        self.native_formats = frozenset({NATIVE_OPENAI_RESPONSES, NATIVE_OPENAI_CHAT})
        self._api_key = api_key
        self._max_tokens_field: MaxTokensField = max_tokens_field or (
            "max_completion_tokens" if base_url is None else "max_tokens"
        )
        self._stream_usage = stream_usage
        self._stall_timeout_s = stall_timeout_s
        # Streams: the transport's read timeout spots silence at the byte level, so keep-alive
        # comments (which the SDK skips) still count as signs of life.
        self._stream_timeout = httpx2.Timeout(None, connect=10.0, read=stall_timeout_s)
        self._wall_clock = wall_clock
        self._client = openai.AsyncOpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url or OPENAI_API_URL,
            default_headers=HOP_HEADERS,
            max_retries=0,
            # Our CallTimer owns deadlines; this only stops the SDK imposing its own.
            timeout=openai.Timeout(None, connect=10.0),
            http_client=openai.DefaultAioHttpClient(
                limits=httpx2.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            ),
        )

    def __repr__(self) -> str:
        return f"OpenAIWorker(name={self.name!r}, model={self.default_model!r})"

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        """One chat completion; raises `ProviderError` on failure or after `timeout_s`.

        For a native request the answer's `native` is the upstream's JSON exactly as received.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        if request.native is not None:
            return await self._complete_native(request, timer)
        try:
            response = await timer.within(
                self._client.chat.completions.create(**self._params(request), stream=False)
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        except httpx2.HTTPError as exc:
            raise connection_error(
                self.name, "connection lost", exc, secrets=self._secrets
            ) from None
        except json.JSONDecodeError as exc:
            raise connection_error(
                self.name, "malformed response", exc, secrets=self._secrets
            ) from None
        if not response.choices:
            raise ProviderError(self.name, "response has no choices", retryable=True)
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            usage=Usage(
                input_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else 0,
            ),
            model=response.model or self.default_model,
            finish_reason=choice.finish_reason,
        )

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        """Yield one chunk per content delta, then a final empty chunk with finish reason and usage.

        Raises a retryable `ProviderError` if the stream stalls, runs past `timeout_s`, or ends
        before a choice reports its finish reason. Closing the iterator closes the response.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        if request.native is not None:
            async for chunk in self._stream_native(request, timer):
                yield chunk
            return
        params = self._params(request)
        if self._stream_usage:
            params["stream_options"] = {"include_usage": True}
        try:
            chunks = await timer.within(
                self._client.chat.completions.create(
                    **params, stream=True, timeout=self._stream_timeout
                )
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        index = 0
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            while True:
                try:
                    chunk = await timer.within(anext(chunks))
                except StopAsyncIteration:
                    break
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0,
                        output_tokens=chunk.usage.completion_tokens or 0,
                    )
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta is not None and choice.delta.content:
                    yield StreamChunk(text=choice.delta.content, index=index)
                    index += 1
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
        except openai.APITimeoutError:
            raise stalled_error(self.name, self._stall_timeout_s) from None
        except openai.APIConnectionError as exc:
            raise connection_error(
                self.name, "connection lost mid-stream", exc, secrets=self._secrets
            ) from None
        except openai.APIError as exc:
            raise self._translate(exc) from None
        except json.JSONDecodeError as exc:
            raise connection_error(
                self.name, "malformed stream event", exc, secrets=self._secrets
            ) from None
        finally:
            await chunks.close()
        if finish_reason is None:
            raise truncated_stream_error(self.name, index)
        yield StreamChunk(text="", index=index, finish_reason=finish_reason, usage=usage)

    async def aclose(self) -> None:
        """Close the shared HTTP session."""
        await self._client.close()

    @property
    def _secrets(self) -> tuple[str | None]:
        return (self._api_key,)

    def _native_call(self, request: InferenceRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON body and the SDK request options for a native request."""
        assert request.native is not None
        body = {k: v for k, v in request.native.items() if k != "stream"}
        body["model"] = request.model or self.default_model
        options: dict[str, Any] = {}
        headers = request.metadata.get(OPENAI_CLIENT_HEADERS)
        if headers:
            options["headers"] = json.loads(headers)
        return body, options

    async def _complete_native(self, request: InferenceRequest, timer: CallTimer) -> Completion:
        if request.native_format == NATIVE_OPENAI_CHAT:
            return await self._complete_native_chat(request, timer)
        body, options = self._native_call(request)
        try:
            answer = await timer.within(
                self._client.post("/responses", cast_to=object, body=body, options=options)
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        except (httpx2.HTTPError, json.JSONDecodeError) as exc:
            raise connection_error(
                self.name, "connection lost", exc, secrets=self._secrets
            ) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("output"), list):
            raise connection_error(
                self.name, "malformed response", TypeError("not a response"), secrets=()
            )
        return Completion(
            text=response_text(answer),
            usage=responses_usage(answer.get("usage")),
            model=answer.get("model") or body["model"],
            finish_reason="length" if answer.get("status") == "incomplete" else "stop",
            native=answer,
        )

    async def _complete_native_chat(
        self, request: InferenceRequest, timer: CallTimer
    ) -> Completion:
        body, options = self._native_call(request)
        try:
            answer = await timer.within(
                self._client.post("/chat/completions", cast_to=object, body=body,
                                  options=options)
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        except (httpx2.HTTPError, json.JSONDecodeError) as exc:
            raise connection_error(
                self.name, "connection lost", exc, secrets=self._secrets
            ) from None
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderError(self.name, "response has no choices", retryable=True)
        message = choices[0].get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        return Completion(
            text=text if isinstance(text, str) else "",
            usage=_chat_usage(answer.get("usage")),
            model=answer.get("model") or body["model"],
            finish_reason=choices[0].get("finish_reason"),
            native=answer,
        )

    async def _stream_native_chat(
        self, request: InferenceRequest, timer: CallTimer
    ) -> AsyncIterator[StreamChunk]:
        body, options = self._native_call(request)
        body["stream"] = True
        client_options = body.get("stream_options")
        client_wants_usage = isinstance(client_options, dict) and bool(
            client_options.get("include_usage"))
        if self._stream_usage and not client_wants_usage:  # we bill by it
            body["stream_options"] = {**(client_options or {}), "include_usage": True}
        options["timeout"] = self._stream_timeout
        try:
            events = await timer.within(
                self._client.post("/chat/completions", cast_to=object, body=body,
                                  options=options, stream=True, stream_cls=_RawEvents)
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        index, finish_reason, usage = 0, None, None
        try:
            while True:
                try:
                    event: Any = await timer.within(anext(events))
                except StopAsyncIteration:
                    break
                if "error" in event:
                    raise self._event_error(event)
                if event.get("usage"):
                    usage = _chat_usage(event["usage"])
                choices = event.get("choices") or []
                if not choices and not client_wants_usage:
                    continue  # the usage chunk we asked for, not the client
                delta = (choices[0].get("delta") or {}) if choices else {}
                text = delta.get("content") if isinstance(delta, dict) else None
                if choices and choices[0].get("finish_reason") is not None:
                    finish_reason = choices[0]["finish_reason"]
                yield StreamChunk(text=text if isinstance(text, str) else "", index=index,
                                  native=event)
                index += 1
        except _NATIVE_STREAM_FAILURES as exc:
            raise self._native_stream_failure(exc) from None
        finally:
            await events.close()
        if finish_reason is None:
            raise truncated_stream_error(self.name, index)
        yield StreamChunk(text="", index=index, finish_reason=finish_reason, usage=usage)

    def _native_stream_failure(self, exc: Exception) -> ProviderError:
        """What a native stream (chat or Responses) raises when it fails after it started."""
        if isinstance(exc, openai.APIError):
            return self._translate(exc)
        if isinstance(exc, httpx2.TimeoutException):
            return stalled_error(self.name, self._stall_timeout_s)
        if isinstance(exc, httpx2.HTTPError):
            return connection_error(
                self.name, "connection lost mid-stream", exc, secrets=self._secrets
            )
        return connection_error(self.name, "malformed stream event", exc, secrets=self._secrets)

    async def _stream_native(
        self, request: InferenceRequest, timer: CallTimer
    ) -> AsyncIterator[StreamChunk]:
        if request.native_format == NATIVE_OPENAI_CHAT:
            async for chunk in self._stream_native_chat(request, timer):
                yield chunk
            return
        body, options = self._native_call(request)
        body["stream"] = True
        options["timeout"] = self._stream_timeout
        try:
            events = await timer.within(
                self._client.post(
                    "/responses",
                    cast_to=object,
                    body=body,
                    options=options,
                    stream=True,
                    stream_cls=_RawEvents,
                )
            )
        except openai.APIError as exc:
            raise self._translate(exc) from None
        index = 0
        try:
            while True:
                try:
                    event: Any = await timer.within(anext(events))
                except StopAsyncIteration:
                    break
                kind = event.get("type")
                if kind in ("error", "response.failed") or ("error" in event and kind is None):
                    raise self._event_error(event)
                if kind in _RESPONSE_DONE:
                    response = event.get("response") or {}
                    yield StreamChunk(
                        text="",
                        index=index,
                        finish_reason=_RESPONSE_DONE[kind],
                        usage=responses_usage(response.get("usage")),
                        native=event,
                    )
                    return
                text = event.get("delta") if kind == "response.output_text.delta" else ""
                yield StreamChunk(text=text if isinstance(text, str) else "", index=index,
                                  native=event)
                index += 1
        except _NATIVE_STREAM_FAILURES as exc:
            raise self._native_stream_failure(exc) from None
        finally:
            await events.close()
        raise truncated_stream_error(self.name, index)

    def _event_error(self, event: Mapping[str, Any]) -> ProviderError:
        """The `ProviderError` for an `error` or `response.failed` event inside a 200 stream."""
        error: Any = event.get("error")
        if event.get("type") == "response.failed":
            response = event.get("response")
            error = response.get("error") if isinstance(response, Mapping) else None
        error = error if isinstance(error, Mapping) else event
        code = error.get("code")
        if isinstance(code, int) or (isinstance(code, str) and code.isdigit()):
            status = int(code)
        else:
            status = _STATUS_OF_CODE.get(str(code), 500)
        return status_error(
            self.name,
            status,
            describe_body({"error": error}) or "error event in the stream",
            {},
            secrets=self._secrets,
            now=self._wall_clock,
        )

    def _params(self, request: InferenceRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages += [{"role": m.role, "content": m.content} for m in request.messages_or_prompt]
        params: dict[str, Any] = {
            "model": request.model or self.default_model,
            "messages": messages,
        }
        if request.max_tokens is not None:  # None: the upstream's own limit (the model's)
            params[self._max_tokens_field] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    def _translate(self, exc: openai.APIError) -> ProviderError:
        if isinstance(exc, openai.APITimeoutError):
            return connection_error(self.name, "request timed out", exc, secrets=self._secrets)
        if isinstance(exc, openai.APIConnectionError):
            return connection_error(self.name, "connection failed", exc, secrets=self._secrets)
        if isinstance(exc, openai.APIStatusError):
            return status_error(
                self.name,
                exc.status_code,
                describe_body(exc.body) or exc.message,
                exc.response.headers,
                secrets=self._secrets,
                now=self._wall_clock,
            )
        # An error object sent inside an open stream: no HTTP status, maybe a numeric code.
        code = exc.code
        if code is not None and code.isdigit():
            return status_error(
                self.name,
                int(code),
                describe_body(exc.body) or exc.message,
                {},
                secrets=self._secrets,
                now=self._wall_clock,
            )
        return connection_error(self.name, "upstream error mid-stream", exc, secrets=self._secrets)
