"""`FakeUpstream`: a real HTTP server on 127.0.0.1 that a provider worker can be pointed at.

Subclasses speak one wire format; this class owns the server's life (start, die, come back),
counts what it received, injects faults and can hold answers until a test releases them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .faults import (
    CutStream,
    Fail,
    Fault,
    Hang,
    KeepAlive,
    Malformed,
    StallStream,
    StreamError,
)

_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRequest:
    """One request as the fake saw it; `headers` look up case-insensitively."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    client_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One piece of a streamed answer; `text` marks it as carrying answer text."""

    data: bytes
    text: bool = False


def _client_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else 0


def word_chunks(text: str) -> list[str]:
    """How the fakes split an answer into tokens: one word with its trailing space each."""
    return _WORD.findall(text)


def count_words(*texts: str | None) -> int:
    """How the fakes count input tokens: whitespace-separated words."""
    return sum(len(t.split()) for t in texts if t)


class FakeUpstream:
    """Base of the fake provider servers; use as `async with FakeX() as fake:`.

    `reply` is the answer text. Faults: `fail_next(*faults)` queues faults for the next
    requests, one each; `fail_always(fault)` applies to every request until cleared with
    `fail_always(None)`. `hold()` makes requests wait (after being counted) until `release()`.
    `stop()` and `restart()` take the server down (connections refused) and bring it back on
    the same port.
    """

    routes: Sequence[str] = ()
    # GET routes (model lists, health) that `get_body` answers; counted, and `Fail` applies.
    get_routes: Sequence[str] = ()

    def __init__(self, *, reply: str = "Hello from the fake upstream.") -> None:
        self.reply = reply
        self.requests: list[ReceivedRequest] = []
        self.disconnects = 0
        self._faults: deque[Fault] = deque()
        self._persistent: Fault | None = None
        self._gate = asyncio.Event()
        self._gate.set()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 (an ephemeral port the first time, the same port afterwards)."""
        app = web.Application(client_max_size=64 * 2**20)  # agents send long contexts
        for path in self.routes:
            app.router.add_post(path, self._handle)
        for path in self.get_routes:
            app.router.add_get(path, self._handle_get)
        # handler_cancellation: a client that hangs up cancels its handler, which we count.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        self._runner = runner
        self._stopping = asyncio.Event()
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Die: stop listening and drop every open connection."""
        self._stopping.set()
        self._gate.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def restart(self) -> None:
        """Come back on the same port."""
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The server's root URL, `http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self._port}"

    # --- control ----------------------------------------------------------------------------

    def fail_next(self, *faults: Fault) -> None:
        """Apply these faults to the next requests, one fault per request, in order."""
        self._faults.extend(faults)

    def fail_always(self, fault: Fault | None) -> None:
        """Apply `fault` to every request (after any queued ones); None heals the server."""
        self._persistent = fault

    def hold(self) -> None:
        """Make requests wait, once counted, until `release()`."""
        self._gate.clear()

    def release(self) -> None:
        """Let held requests proceed."""
        self._gate.set()

    @property
    def request_count(self) -> int:
        """How many requests reached the server."""
        return len(self.requests)

    async def wait_for_requests(self, n: int, *, timeout_s: float = 30.0) -> None:
        """Return once at least `n` requests have arrived; TimeoutError after `timeout_s`."""
        await self._wait_until(lambda: self.request_count >= n, timeout_s)

    async def wait_for_disconnects(self, n: int, *, timeout_s: float = 30.0) -> None:
        """Return once at least `n` clients have hung up mid-request."""
        await self._wait_until(lambda: self.disconnects >= n, timeout_s)

    async def _wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- wire format (subclasses) -----------------------------------------------------------

    def error_body(self, fail: Fail) -> Mapping[str, Any]:
        raise NotImplementedError

    def error_event(self, fault: StreamError) -> bytes:
        raise NotImplementedError

    def keepalive_event(self) -> bytes:
        """Bytes that keep a stream alive without carrying an answer: an SSE comment."""
        return b": keep-alive\n\n"

    def malformed_event(self) -> bytes:
        """A stream event whose JSON does not parse (named, where the format names events)."""
        return b"data: {not json\n\n"

    def answer_body(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        raise NotImplementedError

    def answer_events(self, body: Mapping[str, Any]) -> list[Event]:
        raise NotImplementedError

    def get_body(self, path: str) -> Mapping[str, Any]:
        """The answer to `GET path` (one of `get_routes`)."""
        raise NotImplementedError

    def is_stream(self, body: Mapping[str, Any]) -> bool:
        return bool(body.get("stream"))

    # --- serving ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        self.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                client_port=_client_port(request),
            )
        )
        self._notify()
        fault = self._faults.popleft() if self._faults else self._persistent
        try:
            await self._gate.wait()
            return await self._respond(request, body, fault)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            self._notify()
            raise

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body={},
                client_port=_client_port(request),
            )
        )
        self._notify()
        fault = self._faults.popleft() if self._faults else self._persistent
        if isinstance(fault, Fail):
            return web.json_response(self.error_body(fault), status=fault.status)
        return web.json_response(self.get_body(request.path))

    async def _respond(
        self, request: web.Request, body: Mapping[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        if isinstance(fault, Fail):
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            return web.json_response(self.error_body(fault), status=fault.status, headers=headers)
        if isinstance(fault, Hang):
            await self._stopping.wait()
            raise web.HTTPServiceUnavailable()
        if self.is_stream(body):
            return await self._stream(request, self.answer_events(body), fault)
        return await self._whole(request, self.answer_body(body), fault)

    async def _whole(
        self, request: web.Request, answer: Mapping[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        payload = json.dumps(answer).encode()
        if isinstance(fault, Malformed):
            return web.Response(body=b"{not json", content_type="application/json")
        if isinstance(fault, StreamError):  # without a stream, the failure is the HTTP status
            error = Fail(status=fault.status, message=fault.message)
            return web.json_response(self.error_body(error), status=fault.status)
        if fault is None:
            return web.json_response(body=payload)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if isinstance(fault, StallStream):
            await self._stopping.wait()
        self._drop_connection(request)
        return response

    async def _stream(
        self, request: web.Request, events: list[Event], fault: Fault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        limit = (
            fault.after_chunks
            if isinstance(fault, CutStream | StallStream | StreamError | Malformed)
            else None
        )
        sent = 0
        for event in events:
            if isinstance(fault, KeepAlive) and event.text and sent == fault.after_chunks:
                await self._keep_alive(response, fault)
            elif limit is not None and event.text and sent >= limit:
                break
            await response.write(event.data)
            sent += event.text
        else:
            await response.write_eof()
            return response
        if isinstance(fault, StallStream):
            await self._stopping.wait()
        if isinstance(fault, StreamError | Malformed):
            bad = self.error_event(fault) if isinstance(fault, StreamError) else None
            await response.write(bad or self.malformed_event())
            await response.write_eof()
        elif isinstance(fault, CutStream) and not fault.abrupt:
            await response.write_eof()
        else:
            self._drop_connection(request)
        return response

    async def _keep_alive(self, response: web.StreamResponse, fault: KeepAlive) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + fault.pause_s
        while loop.time() < until:
            await asyncio.sleep(min(fault.every_s, until - loop.time()))
            await response.write(self.keepalive_event())

    @staticmethod
    def _drop_connection(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()
