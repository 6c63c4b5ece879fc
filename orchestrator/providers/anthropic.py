"""`AnthropicWorker`: the Messages API through the official `anthropic` SDK over aiohttp."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anthropic
import httpx2  # the SDK's HTTP layer: its errors can escape the SDK's stream iterator

from orchestrator.errors import ProviderError
from orchestrator.providers._http import (
    ANTHROPIC_API_URL,
    HOP_HEADERS,
    CallTimer,
    check_worker_args,
    connection_error,
    describe_body,
    stalled_error,
    status_error,
    truncated_stream_error,
)
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


class _EveryEvent(anthropic.AsyncStream[object]):
    """The stream's events as JSON, `ping` and `error` included: the SDK's own stream drops
    pings, and a native client is owed every event the provider sent."""

    async def __stream__(self) -> AsyncIterator[object]:
        try:
            async for sse in self._iter_events():  # the SDK's hook for subclasses
                if sse.event is not None and sse.data:
                    yield sse.json()
        finally:
            await self.response.aclose()


class AnthropicWorker:
    """A `Worker` for Anthropic's Messages API (or anything that speaks it, via `base_url`).

    Takes native Anthropic request bodies (`native_formats`): they are sent as given, and the
    answer comes back as the JSON Anthropic sent (the SDK sends and classifies, but does not
    parse into its own types, so no field the SDK does not know is lost).

    Uses one `AsyncAnthropic` client with the SDK's aiohttp transport, so every call shares one
    aiohttp session (httpx's own pool collapses at a few hundred requests/s). The SDK's own
    retries are off: the pipeline retries. `stall_timeout_s` bounds how long a stream may send
    no bytes at all (pings count); `timeout_s` on each call bounds the whole call.
    Call `aclose()` when done.
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
        self.name = name
        self.default_model = model
        self.native_formats = frozenset({NATIVE_ANTHROPIC})
        self._api_key = api_key
        self._stall_timeout_s = stall_timeout_s
        # Streams: the transport's read timeout spots silence at the byte level, so the pings
        # the SDK swallows still count as signs of life.
        self._stream_timeout = httpx2.Timeout(None, connect=10.0, read=stall_timeout_s)
        self._wall_clock = wall_clock
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url or ANTHROPIC_API_URL,
            default_headers=HOP_HEADERS,
            max_retries=0,
            # Our CallTimer owns deadlines; this only stops the SDK imposing its own.
            timeout=anthropic.Timeout(None, connect=10.0),
            http_client=anthropic.DefaultAioHttpClient(
                limits=httpx2.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            ),
        )

    def __repr__(self) -> str:
        return f"AnthropicWorker(name={self.name!r}, model={self.default_model!r})"

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        """One Messages API call; raises `ProviderError` on failure or after `timeout_s`.

        For a native request the answer's `native` is the message JSON exactly as received.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        body, options = self._body(request)
        try:
            message = await timer.within(
                self._client.post("/v1/messages", cast_to=object, body=body, options=options)
            )
        except anthropic.APIError as exc:
            raise self._translate(exc) from None
        except httpx2.HTTPError as exc:
            raise connection_error(
                self.name, "connection lost", exc, secrets=(self._api_key,)
            ) from None
        except json.JSONDecodeError as exc:
            raise connection_error(
                self.name, "malformed response", exc, secrets=(self._api_key,)
            ) from None
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
        with finish reason and usage.
        Raises a retryable `ProviderError` if the stream stalls, runs past `timeout_s`, or ends
        before `message_stop`. Closing the iterator early closes the upstream response.
        """
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
        body, options = self._body(request)
        body["stream"] = True
        options["timeout"] = self._stream_timeout
        native = request.native is not None
        try:
            events = await timer.within(
                self._client.post(
                    "/v1/messages",
                    cast_to=object,
                    body=body,
                    options=options,
                    stream=True,
                    stream_cls=_EveryEvent,
                )
            )
        except anthropic.APIError as exc:
            raise self._translate(exc) from None
        index = 0
        usage = Usage()
        stop_reason: str | None = None
        last: dict[str, Any] | None = None
        try:
            # Read on past message_stop to the end of the body so the connection is reused.
            while True:
                try:
                    event: Any = await timer.within(anext(events))
                except StopAsyncIteration:
                    break
                kind = event.get("type")
                text = ""
                if kind == "error":
                    raise self._stream_error(event, events.response.headers)
                if kind == "ping" and not native:
                    continue
                if kind == "message_start":
                    usage = usage_of(event["message"].get("usage"))
                elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                    text = event["delta"]["text"]
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
        except anthropic.APIError as exc:
            raise self._translate(exc) from None
        except httpx2.TimeoutException:
            raise stalled_error(self.name, self._stall_timeout_s) from None
        except httpx2.HTTPError as exc:
            raise connection_error(
                self.name, "connection lost mid-stream", exc, secrets=(self._api_key,)
            ) from None
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise connection_error(
                self.name, "malformed stream event", exc, secrets=(self._api_key,)
            ) from None
        finally:
            await events.close()
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
        headers = {"anthropic-beta": beta, "anthropic-version": version}
        options: dict[str, Any] = {"headers": {k: v for k, v in headers.items() if v}}
        try:
            counted = await timer.within(
                self._client.post(
                    "/v1/messages/count_tokens", cast_to=object, body=dict(body), options=options
                )
            )
        except anthropic.APIError as exc:
            raise self._translate(exc) from None
        except (httpx2.HTTPError, json.JSONDecodeError) as exc:
            raise connection_error(
                self.name, "token count failed", exc, secrets=(self._api_key,)
            ) from None
        if not isinstance(counted, dict) or not isinstance(counted.get("input_tokens"), int):
            raise connection_error(
                self.name, "malformed response", TypeError("not a token count"), secrets=()
            )
        return counted

    async def aclose(self) -> None:
        """Close the shared HTTP session."""
        await self._client.close()

    def _body(self, request: InferenceRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON body and the SDK request options for `request`."""
        model = request.model or self.default_model
        options: dict[str, Any] = {}
        if request.native is not None:
            body = {k: v for k, v in request.native.items() if k != "stream"}
            body["model"] = model
            # The client's own headers: the body was written for its API version and betas.
            headers = {
                "anthropic-beta": request.metadata.get(ANTHROPIC_BETA),
                "anthropic-version": request.metadata.get(ANTHROPIC_VERSION),
            }
            headers = {k: v for k, v in headers.items() if v}
            if headers:
                options["headers"] = headers
            return body, options
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
        return body, options

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

    def _translate(self, exc: anthropic.APIError) -> ProviderError:
        secrets = (self._api_key,)
        if isinstance(exc, anthropic.APITimeoutError):
            return connection_error(self.name, "request timed out", exc, secrets=secrets)
        if isinstance(exc, anthropic.APIConnectionError):
            return connection_error(self.name, "connection failed", exc, secrets=secrets)
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status < 400:  # an `event: error` inside a 200 stream
                kind = exc.type or ""
                status = _STATUS_OF_ERROR_TYPE.get(kind, 500)
            return status_error(
                self.name,
                status,
                describe_body(exc.body) or exc.message,
                exc.response.headers,
                secrets=secrets,
                now=self._wall_clock,
            )
        return connection_error(self.name, "bad response", exc, secrets=secrets)


def _finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return _FINISH_REASON.get(stop_reason, stop_reason)
