"""`HttpClient`: the HTTP/1.1 client the Anthropic and llama.cpp workers call upstream with.

A keep-alive connection pool on asyncio protocols, with the llhttp parser (`httptools`) that
uvicorn already brings. Why not aiohttp's client: its request and response objects,
multidicts, stream readers and connector bookkeeping were the largest single part of what the
gateway added per request; one POST with its answer read, client side only, measured in one
process against an upstream in another (2026-12-08), cost ~60–78 µs of CPU with aiohttp and
~14–22 µs with this client.

What it does: POST (and GET) with a byte body over plain TCP or TLS (the system's trusted
certificates, host name checked), responses framed by Content-Length, chunked encoding or the
end of the connection, streamed reads with flow control, at most `max_connections` requests
in flight, idle connections reused newest first and dropped after `idle_timeout_s`. What it
leaves out: redirects (a provider key is not for whichever host a redirect names), cookies,
proxies from the environment and compression, none of which the gateway's upstream calls use
(the aiohttp session it replaces had them off too). No retries: the pipeline retries.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import httptools

_MAX_BUFFERED = 256 * 1024
"""Bytes of an unread body held before the socket stops reading (a slow reader's backpressure)."""

_MAX_HEADER_BYTES = 256 * 1024
"""An upstream whose response headers outgrow this is refused, not buffered."""


class TransportError(Exception):
    """A connection could not be made, broke, or did not answer HTTP; its `__cause__` (when
    there is one) is the socket's own error."""


class HttpResponse:
    """One response: `status`, `headers` (names lower-cased; repeated ones joined by ", "), and
    its body through `read()` or, as it arrives, `readany()`. Call `release()` when done: the
    connection goes back to the pool if the body was read to its end, and is closed if not."""

    __slots__ = ("_connection", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], connection: _Connection) -> None:
        self.status = status
        self.headers = headers
        self._connection: _Connection | None = connection

    async def read(self) -> bytes:
        """The rest of the body, once all of it has arrived."""
        connection = self._active()
        chunks = []
        while chunk := await connection.next_chunk():
            chunks.append(chunk)
        return b"".join(chunks)

    async def readany(self) -> bytes:
        """Whatever body bytes have arrived (waiting for some); b"" at the end of the body."""
        return await self._active().next_chunk()

    def release(self) -> None:
        """Done with this response (safe to call again)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finish()

    def _active(self) -> _Connection:
        if self._connection is None:
            raise TransportError("the response was already released")
        return self._connection


class HttpClient:
    """A pool of keep-alive HTTP/1.1 connections, bound to the event loop of its first call.

    `post(url, body, headers)` answers an `HttpResponse` once the response headers are in;
    failures to connect, send or parse raise `TransportError`. Callers bound each call's time
    themselves (a cancelled call closes its connection). `aclose()` closes every connection.
    """

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        if not connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._ssl_context = ssl_context
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._closed = False

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST `body` to `url` with `headers` (Host and Content-Length are added)."""
        return await self.request("POST", url, body, headers)

    async def request(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> HttpResponse:
        """Send one request; the `HttpResponse` once its status and headers have arrived."""
        self._closed = False
        target = self._targets.get(url) or self._target(url)
        head = _request_head(method, target, len(body), headers)
        slots = self._slots_for_loop()
        await slots.acquire()
        connection: _Connection | None = None
        try:
            connection = self._idle_connection(target.origin) or await self._connect(target)
            connection.start(head + body if body else head)
            return await connection.response()
        except BaseException:
            if connection is None:
                slots.release()
            else:
                connection.abort()  # gives its slot back
            raise

    async def aclose(self) -> None:
        """Close every idle connection; calls still running close theirs when they finish.
        A later call opens new ones."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()

    def _slots_for_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._slots is None:
            # A new loop (a test's, a restarted server's): the old one's sockets are unusable.
            for idle in self._idle.values():
                for connection in idle:
                    connection.close()
            self._idle.clear()
            self._loop = loop
            self._slots = asyncio.Semaphore(self._max_connections)
        return self._slots

    def _target(self, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = port == (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        host_header = host if ":" not in host else f"[{host}]"
        if not default_port:
            host_header += f":{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        target = _Target((parts.scheme, host, port), path, host_header)
        if len(self._targets) < 64:  # the workers call a handful of URLs; never unbounded
            self._targets[url] = target
        return target

    def _idle_connection(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = self._clock()
        while idle and now - idle[0].idle_since > self._idle_timeout_s:
            idle.popleft().close()  # the oldest first: past its idle time
        while idle:
            connection = idle.pop()  # the newest: the least likely to have been closed
            if connection.reusable:
                return connection
        return None

    async def _connect(self, target: _Target) -> _Connection:
        scheme, host, port = target.origin
        tls = None
        if scheme == "https":
            tls = self._ssl_context or _default_ssl_context()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, target.origin),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise TransportError(
                f"could not connect to {host}:{port} within {self._connect_timeout_s:g}s"
            ) from exc
        except OSError as exc:  # ssl.SSLError (a certificate refused) is one too
            raise TransportError(f"could not connect to {host}:{port}") from exc
        return connection

    def _give_back(self, connection: _Connection, keep: bool) -> None:
        """A call is done with `connection`: pool it (`keep`) or close it; free its slot."""
        if keep and not self._closed and connection.loop is self._loop:
            connection.idle_since = self._clock()
            self._idle.setdefault(connection.origin, deque()).append(connection)
        else:
            connection.close()
        if self._slots is not None and connection.loop is self._loop:
            self._slots.release()


class _Target:
    """A URL split once into what a request needs."""

    __slots__ = ("host_header", "origin", "path")

    def __init__(self, origin: tuple[str, str, int], path: str, host_header: str) -> None:
        self.origin = origin
        self.path = path
        self.host_header = host_header


def _request_head(method: str, target: _Target, length: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r}: a line break in it, or a colon in its name")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"content-length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


_ssl_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:  # built once: loading the trust store takes milliseconds
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class _Connection(asyncio.Protocol):
    """One socket, carrying one exchange at a time."""

    def __init__(self, client: HttpClient, origin: tuple[str, str, int]) -> None:
        self.client = client
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.idle_since = 0.0
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        self._busy = False
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._headers_done: asyncio.Future[HttpResponse] | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._reading_paused = False
        self._complete = False
        self._ends_at_eof = False
        self._keep_alive = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def reusable(self) -> bool:
        transport = self._transport
        # is_closing: the peer's FIN was read and the close began, connection_lost not yet run
        return (not self._closed and self._error is None and transport is not None
                and not transport.is_closing())

    # One exchange: start → response → next_chunk… → finish (or abort).

    def start(self, data: bytes) -> None:
        self._busy = True
        self._headers = {}
        self._header_bytes = 0
        self._chunks = []
        self._buffered = 0
        self._complete = False
        self._ends_at_eof = False
        self._keep_alive = False
        self._headers_done = self.loop.create_future()
        assert self._transport is not None
        self._transport.write(data)

    async def response(self) -> HttpResponse:
        assert self._headers_done is not None
        return await self._headers_done

    async def next_chunk(self) -> bytes:
        while not self._chunks:
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        self._buffered = 0
        if self._reading_paused and self._transport is not None and not self._closed:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunk

    def finish(self) -> None:
        """The caller is done: keep the socket only if the whole answer was read from it."""
        keep = self._complete and not self._chunks and self.reusable and self._keep_alive
        self._end_exchange(keep)

    def abort(self) -> None:
        """The exchange failed or was cancelled before its response: drop the socket."""
        self._end_exchange(False)

    def _end_exchange(self, keep: bool) -> None:
        if not self._busy:
            return
        self._busy = False
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.cancel()
        self.client._give_back(self, keep)

    def close(self) -> None:
        self._closed = True
        if self._transport is not None and not self.loop.is_closed():  # else: gone with it
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self._fail(TransportError("the server sent bytes nobody asked for"))
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"the server's response is not valid HTTP: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._ends_at_eof and not self._complete and self._headers_done is None:
            self._complete = True  # a body without a length ends where the connection does
            self._wake()
            return
        if not self._complete:
            reason = "the server closed the connection before the answer was complete"
            error = TransportError(reason)
            error.__cause__ = exc
            self._fail(error)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES:
            raise httptools.HttpParserError("response headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (100 Continue): the real one follows
        headers = self._headers
        self._ends_at_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        future, self._headers_done = self._headers_done, None
        if future is not None and not future.done():
            future.set_result(HttpResponse(status, headers, self))

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _MAX_BUFFERED and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._headers_done is not None:
            return  # the end of an interim answer
        self._complete = True
        self._ends_at_eof = False
        # Read here: the parser forgets it once the message is over.
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        future, self._headers_done = self._headers_done, None
        if future is not None and not future.done():
            future.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
