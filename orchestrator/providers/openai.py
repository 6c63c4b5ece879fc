"""`OpenAIWorker`: chat completions through the official `openai` SDK over aiohttp.

With `base_url` it serves any OpenAI-compatible server: vLLM, llama.cpp's `llama-server`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
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
from orchestrator.request import Completion, InferenceRequest, StreamChunk, Usage

DEFAULT_MODEL = "gpt-5.4-mini"

# Local servers (llama.cpp, vLLM) accept any key unless started with one; the SDK needs some.
_NO_KEY = "sk-no-key-required"

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIWorker:
    """A `Worker` for the Chat Completions API of OpenAI or an OpenAI-compatible server.

    `api_key` is required for OpenAI itself and optional with `base_url` (a local server).
    `max_tokens_field` names the request's token limit: OpenAI wants `max_completion_tokens`,
    older compatible servers only know `max_tokens` (the default when `base_url` is given).
    `stream_usage` asks for usage in the last stream chunk (`stream_options.include_usage`);
    turn it off for a server that rejects it, and the final chunk's `usage` is then None.
    `stall_timeout_s` bounds how long a stream may send no bytes at all (keep-alive comments
    count). One aiohttp session is shared by every call; the SDK's own retries are off.
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
        """One chat completion; raises `ProviderError` on failure or after `timeout_s`."""
        timer = CallTimer(self.name, timeout_s, self._stall_timeout_s)
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

    def _params(self, request: InferenceRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages += [{"role": m.role, "content": m.content} for m in request.messages_or_prompt]
        params: dict[str, Any] = {
            "model": request.model or self.default_model,
            "messages": messages,
            self._max_tokens_field: request.max_tokens,
        }
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
