"""Streaming helpers shared by the routers: server-sent events and a stream whose errors
before the first chunk still reach the caller as an HTTP status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from orchestrator.codec import dumps_str
from orchestrator.pipeline import Pipeline
from orchestrator.request import InferenceRequest, StreamChunk
from orchestrator.server.bodies import cache_headers

__all__ = ["OpenedStream", "dumps", "open_stream", "sse", "sse_response"]


def dumps(data: Any) -> str:
    """Compact JSON, UTF-8 kept as is."""
    return dumps_str(data)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; `data` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else dumps(data)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {payload}\n\n".encode()


class _ClosingStream(StreamingResponse):
    """A streaming response that closes what it streams from as soon as it ends, the client's
    disconnect included: Starlette only stops iterating, which leaves the generators (and
    the upstream call under them) running until the garbage collector finds them."""

    def __init__(self, events: AsyncIterator[bytes], closes: AsyncIterator[Any]) -> None:
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        if isinstance(closes, OpenedStream):  # an answer reused says so, as a JSON one does
            headers.update(cache_headers(closes.first))
        super().__init__(events, media_type="text/event-stream", headers=headers)
        self._closes = (events, closes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for stream in self._closes:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()


def sse_response(events: AsyncIterator[bytes], chunks: AsyncIterator[Any]) -> StreamingResponse:
    """A `text/event-stream` response of `events` (made from `chunks`) that proxies do not
    buffer; when it ends, however it ends, both are closed, so a client that leaves stops
    the upstream work it was reading."""
    return _ClosingStream(events, chunks)


async def open_stream(pipeline: Pipeline, request: InferenceRequest) -> AsyncIterator[StreamChunk]:
    """`pipeline.stream(request)`, started: waits for the first chunk, so a refusal (overload,
    budget, provider down) raises here, before any response is sent. Errors after that are
    raised by the returned iterator (an `OpenedStream`), which must be fully consumed or
    closed."""
    chunks = pipeline.stream(request)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return _empty()
    except BaseException:
        await chunks.aclose()
        raise
    return OpenedStream(first, chunks)


async def _empty() -> AsyncIterator[StreamChunk]:
    return
    yield


class OpenedStream:
    """A started stream: its `first` chunk (already read, so `sse_response` can tell from it
    whether the answer was reused), then the rest; `aclose` closes what it reads from."""

    def __init__(self, first: StreamChunk, rest: AsyncIterator[StreamChunk]) -> None:
        self.first = first
        self._next: StreamChunk | None = first
        self._rest = rest

    def __aiter__(self) -> OpenedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        chunk, self._next = self._next, None
        if chunk is not None:
            return chunk
        return await anext(self._rest)

    async def aclose(self) -> None:
        self._next = None
        await self._rest.aclose()  # type: ignore[attr-defined]
