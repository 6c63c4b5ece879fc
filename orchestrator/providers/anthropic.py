"""`AnthropicWorker`: the Messages API over the providers' own pooled `HttpClient`.

The official `anthropic` SDK is what clients of the gateway are tested with; inside the
gateway it cost about 0.6 ms of CPU per call (its request and response models, httpx2's URL
and header objects over the aiohttp transport) for what is here one JSON body, one header
dict built once, and one POST: measured with `benchmarks/http.py`, that was most of the
server's CPU per request (and aiohttp's client most of the rest: see `http_client`). So
this worker speaks the wire protocol itself: the same headers
the SDK sends, the same classification of statuses and `x-should-retry`, and a small SSE
decoder (`SseDecoder`) that reads every event, pings included.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from orchestrator import codec
from orchestrator.errors import ProviderError
from orchestrator.providers._http import (
    ANTHROPIC_API_URL,
    HOP_HEADERS,
    CallTimer,
    check_worker_args,
    connection_error,
    describe_body,
    status_error,
    truncated_stream_error,
)
from orchestrator.providers.http_client import HttpClient, HttpResponse, TransportError
from orchestrator.providers.sse import SseDecoder
from orchestrator.request import (
    ANTHROPIC_BETA,
    ANTHROPIC_VERSION,
    NATIVE_ANTHROPIC,
    Completion,
    InferenceRequest,
    StreamChunk,
    Usage,
)

DEFAULT_MODEL = "claude-sonnet-5-5"

API_VERSION = "2026-10-21"
"""The `anthropic-version` sent when the client names none: the one the pinned SDK sends."""

DEFAULT_MAX_TOKENS = 4096
"""What a text request that names no limit asks for (the Messages API requires one)."""

# Anthropic sends errors inside an open stream as `event: error` with HTTP status 200;
# the error type tells us which status it stands for.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}

# Normalised to the OpenAI vocabulary the rest of the pipeline uses.
_FINISH_REASON = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def usage_of(usage: Mapping[str, Any] | None, before: Usage | None = None) -> Usage:
    """`Usage` from an Anthropic `usage` object (a message's, or a stream event's, whose counts
    are cumulative: a count it leaves out keeps its value from `before`)."""
    usage = usage or {}
    before = before or Usage()

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) else getattr(before, name)

    return Usage(
        input_tokens=count("input_tokens"),
        output_tokens=count("output_tokens"),
        cache_read_input_tokens=count("cache_read_input_tokens"),
        cache_creation_input_tokens=count("cache_creation_input_tokens"),
    )


class AnthropicWorker:
    """A `Worker` for Anthropic's Messages API (or anything that speaks it, via `base_url`).

    Takes native Anthropic request bodies (`native_formats`): they are sent as given (with the
    client's `anthropic-beta` / `anthropic-version`), and the answer comes back as the JSON
    Anthropic sent, so no field this worker does not know is lost.

    One connection pool (`HttpClient`) serves every call; the headers every call shares are
    built once. No retries here: the pipeline retries.
    `stall_timeout_s` bounds how long a stream may send no bytes at all (pings count);
    `timeout_s` on each call bounds the whole call. Call `aclose()` when done.
    """

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        name: str = "anthropic",
        stall_timeout_s: float = 30.0,
        max_connections: int = 1000,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key must be a non-empty string")
        check_worker_args(
            model=model, name=name, stall_timeout_s=stall_timeout_s,
            max_connections=max_connections,
        )
        root = (base_url or ANTHROPIC_API_URL).rstrip("/")
        if not root.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.name = name
        self.default_model = model
        self.native_formats = frozenset({NATIVE_ANTHROPIC})
        self.base_url = root
        """The API root calls go to (never the environment's ANTHROPIC_BASE_URL, which on an
        agent's machine points at this server)."""
        self._api_key = api_key
        self._messages_url = root + "/v1/messages"
        self._count_tokens_url = root + "/v1/messages/count_tokens"
        # What the SDK sends (its bearer form of the key, its API version), built once.
        self._headers = {
            "authorization": f"Bearer {api_key}",
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
            **HOP_HEADERS,
        }
        self._stall_timeout_s = stall_timeout_s
        self._wall_clock = wall_clock
        self._http = HttpClient(max_connections=max_connections)

    def __repr__(self) -> str:
        return f"AnthropicWorker(name={self.name!r}, model={self.default_model!r})"

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        """One Messages API call; raises `ProviderError` on failure or after `timeout_s`.

        For a native request the answer's `native` is the message JSON exactly as received.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        body, headers = self._body(request)
        message = await self._post_json(self._messages_url, body, headers, timer, "connection lost")
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise connection_error(
                self.name, "malformed response", TypeError("not a message"), secrets=()
            )
        text = "".join(
            block.get("text") or ""
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "text"
        )
        return Completion(
            text=text,
            usage=usage_of(message.get("usage")),
            model=message.get("model") or self.default_model,
            finish_reason=_finish_reason(message.get("stop_reason")),
            native=message if request.native is not None else None,
        )

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        """Yield one chunk per text delta, then a final empty chunk with finish reason and usage.

        For a native request, one chunk per raw event instead (pings included), each with the
        event in `native` and its text delta, if any, in `text`; the last is `message_stop`,
        with finish reason and usage. Each event is passed on as soon as its bytes arrive.
        Raises a retryable `ProviderError` if the stream stalls, runs past `timeout_s`, or ends
        before `message_stop`. Closing the iterator early closes the upstream response.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        body, headers = self._body(request)
        body["stream"] = True
        native = request.native is not None
        index = 0
        usage = Usage()
        stop_reason: str | None = None
        last: dict[str, Any] | None = None
        try:
            # Silence counts from the request on: an upstream that never answers has stalled.
            response = await timer.within(self._post(self._messages_url, body, headers), stall=True)
            try:
                if response.status >= 400:
                    raise await self._status_error(response, timer)
                # Read on past message_stop to the end of the body so the connection is reused.
                async for event in self._iter_events(response, timer):
                    kind = event.get("type")
                    text = ""
                    if kind == "error":
                        raise self._stream_error(event, response.headers)
                    if kind == "ping" and not native:
                        continue
                    if kind == "message_start":
                        usage = usage_of(event["message"].get("usage"))
                    elif kind == "content_block_delta":
                        delta = event["delta"]
                        text = delta["text"] if delta.get("type") == "text_delta" else ""
                    elif kind == "message_delta":
                        stop_reason = event["delta"].get("stop_reason")
                        usage = usage_of(event.get("usage"), usage)
                    elif kind == "message_stop":
                        last = event
                        continue
                    if native:
                        yield StreamChunk(text=text, index=index, native=event)
                        index += 1
                    elif text:
                        yield StreamChunk(text=text, index=index)
                        index += 1
            finally:
                response.release()
        except TransportError as exc:
            raise connection_error(
                self.name, "connection lost mid-stream", exc, secrets=(self._api_key,)
            ) from None
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise connection_error(
                self.name, "malformed stream event", exc, secrets=(self._api_key,)
            ) from None
        if last is None:
            raise truncated_stream_error(self.name, index)
        yield StreamChunk(
            text="",
            index=index,
            finish_reason=_finish_reason(stop_reason),
            usage=usage,
            native=last if native else None,
        )

    async def count_tokens(
        self,
        body: Mapping[str, Any],
        *,
        timeout_s: float,
        beta: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Anthropic's own count of a Messages body's input tokens
        (`POST /v1/messages/count_tokens`), as the JSON it answers; raises `ProviderError`.
        `beta` and `version` are the client's `anthropic-beta` / `anthropic-version` headers."""
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        headers = self._client_headers(beta, version)
        counted = await self._post_json(
            self._count_tokens_url, dict(body), headers, timer, "token count failed"
        )
        if not isinstance(counted, dict) or not isinstance(counted.get("input_tokens"), int):
            raise connection_error(
                self.name, "malformed response", TypeError("not a token count"), secrets=()
            )
        return counted

    async def aclose(self) -> None:
        """Close the pooled upstream connections."""
        await self._http.aclose()

    def _post(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Awaitable[HttpResponse]:
        # No redirects (HttpClient follows none): the key is not for whichever host one names.
        return self._http.post(url, codec.dumps(body), headers)

    async def _post_json(
        self,
        url: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        timer: CallTimer,
        what: str,
    ) -> Any:
        """POST `body`, and the JSON answer; a `ProviderError` for an error status, a broken
        connection (`what` says which call failed) or an answer that is not JSON."""
        try:
            response = await timer.within(self._post(url, body, headers))
            try:
                if response.status >= 400:
                    raise await self._status_error(response, timer)
                raw = await timer.within(response.read())
            finally:
                response.release()
        except TransportError as exc:
            raise connection_error(self.name, what, exc, secrets=(self._api_key,)) from None
        try:
            return codec.loads(raw)
        except ValueError as exc:
            raise connection_error(
                self.name, "malformed response", exc, secrets=(self._api_key,)
            ) from None

    async def _iter_events(
        self, response: HttpResponse, timer: CallTimer
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON of each named event of an SSE response, as its bytes arrive; any bytes,
        a ping's too, reset the stall limit."""
        decoder = SseDecoder()
        while chunk := await timer.within(response.readany(), stall=True):
            for name, data in decoder.feed(chunk):
                if name is not None and data:
                    yield codec.loads(data)

    async def _status_error(self, response: HttpResponse, timer: CallTimer) -> ProviderError:
        """The `ProviderError` for an error status, its body read for the message."""
        raw = await timer.within(response.read())
        try:
            detail = describe_body(codec.loads(raw))
        except ValueError:
            detail = raw.decode("utf-8", "replace")[:500]
        return status_error(
            self.name,
            response.status,
            detail or f"HTTP {response.status}",
            response.headers,
            secrets=(self._api_key,),
            now=self._wall_clock,
        )

    def _client_headers(self, beta: str | None, version: str | None) -> Mapping[str, str]:
        """The shared headers, with the client's own `anthropic-beta` / `anthropic-version`
        (its body was written for them) when it sent any."""
        if not beta and not version:
            return self._headers
        headers = dict(self._headers)
        if beta:
            headers["anthropic-beta"] = beta
        if version:
            headers["anthropic-version"] = version
        return headers

    def _body(self, request: InferenceRequest) -> tuple[dict[str, Any], Mapping[str, str]]:
        """The JSON body and the headers for `request`."""
        model = request.model or self.default_model
        if request.native is not None:
            body = {k: v for k, v in request.native.items() if k != "stream"}
            body["model"] = model
            headers = self._client_headers(
                request.metadata.get(ANTHROPIC_BETA), request.metadata.get(ANTHROPIC_VERSION)
            )
            return body, headers
        body = {
            "model": model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": [
                {"role": m.role, "content": m.content} for m in request.messages_or_prompt
            ],
        }
        if request.system is not None:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body, self._headers

    def _stream_error(self, event: Mapping[str, Any], headers: Mapping[str, str]) -> ProviderError:
        """The `ProviderError` for an `event: error` inside a 200 stream."""
        error = event.get("error")
        kind = error.get("type", "") if isinstance(error, Mapping) else ""
        return status_error(
            self.name,
            _STATUS_OF_ERROR_TYPE.get(kind, 500),
            describe_body(event) or "error event in the stream",
            headers,
            secrets=(self._api_key,),
            now=self._wall_clock,
        )


def _finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return _FINISH_REASON.get(stop_reason, stop_reason)
