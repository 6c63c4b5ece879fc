"""`HttpClient` against real sockets: framing, keep-alive, failures, limits, flow control, TLS.

Each test runs a small asyncio server on 127.0.0.1 that answers exactly the bytes the test
wants (the wire cases an aiohttp fake cannot produce: bodies ended by a close, interim 100
answers, cut bodies, huge headers), and counts the connections it accepted.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from fakeclock import FakeClock

from orchestrator.providers.http_client import HttpClient, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """Runs `handler` once per accepted connection; counts connections and requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.closed_by_client = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, path: str = "/x", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (framed by its Content-Length); EOF raises."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body


def echo_forever(*extra: str) -> Handler:
    """Answers every request on the connection with its own body."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            writer.write(answer(body, *extra))
            await writer.drain()

    return handler


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    yield http
    await http.aclose()


async def test_sequential_calls_reuse_one_connection(client: HttpClient) -> None:
    """Keep-alive: three calls, one after another, travel over one socket."""
    async with RawServer(echo_forever()) as server:
        for n in range(3):
            response = await client.post(server.url(), f"call {n}".encode(), {})
            assert (response.status, await response.read()) == (200, f"call {n}".encode())
            response.release()
        assert server.connections == 1


async def test_request_carries_host_length_and_the_given_headers(client: HttpClient) -> None:
    """The head names the path and query, the Host with its port, the body's length."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, body = await read_request(reader)
        seen.append(head + body)
        writer.write(answer(b"{}"))

    async with RawServer(handler) as server:
        response = await client.post(server.url("/v1/m?beta=1"), b"hello", {"x-key": "abc"})
        await response.read()
        response.release()
    lines = seen[0].split(b"\r\n")
    assert lines[0] == b"POST /v1/m?beta=1 HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in lines
    assert b"x-key: abc" in lines and b"content-length: 5" in lines
    assert seen[0].endswith(b"\r\n\r\nhello")


async def test_chunked_body_is_decoded_and_the_connection_kept(client: HttpClient) -> None:
    """Transfer-Encoding: chunked arrives as its decoded bytes, chunk by chunk."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"5\r\nevent\r\n")
            await writer.drain()
            writer.write(b"6\r\n: ping\r\n0\r\n\r\n")

    async with RawServer(handler) as server:
        for _ in range(2):
            response = await client.post(server.url(), b"", {})
            parts = []
            while part := await response.readany():
                parts.append(part)
            response.release()
            assert b"".join(parts) == b"event: ping"
        assert server.connections == 1


async def test_body_ended_by_close_is_whole_and_its_socket_not_reused(
    client: HttpClient,
) -> None:
    """No length and no chunking: the body is what came before the server closed."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async with RawServer(handler) as server:
        for _ in range(2):
            response = await client.post(server.url(), b"", {})
            assert await response.read() == b"all of it"
            response.release()
        assert server.connections == 2


async def test_connection_close_answer_is_not_reused(client: HttpClient) -> None:
    """`Connection: close` from the server: the next call dials again."""
    async with RawServer(echo_forever("connection: close")) as server:
        for _ in range(2):
            response = await client.post(server.url(), b"x", {})
            assert await response.read() == b"x"
            response.release()
        assert server.connections == 2


async def test_interim_100_continue_is_skipped(client: HttpClient) -> None:
    """A 100 Continue before the answer is not the answer."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"real"))

    async with RawServer(handler) as server:
        response = await client.post(server.url(), b"", {})
        assert (response.status, await response.read()) == (200, b"real")
        response.release()


async def test_header_names_lowercased_and_repeats_joined(client: HttpClient) -> None:
    """Headers look up by lower-case name; a repeated header keeps every value."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"", "Retry-After: 7", "Via: a", "Via: b"))

    async with RawServer(handler) as server:
        response = await client.post(server.url(), b"", {})
        response.release()
    assert response.headers["retry-after"] == "7"
    assert response.headers["via"] == "a, b"


async def test_server_closing_before_answering_is_a_transport_error(
    client: HttpClient,
) -> None:
    """A server that hangs up on the request: `TransportError`, and the slot comes back."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    http = HttpClient(max_connections=1)
    async with RawServer(handler) as server:
        for _ in range(2):  # the second call gets the one slot back
            with pytest.raises(TransportError, match="closed the connection"):
                await http.post(server.url(), b"", {})


async def test_cut_body_is_a_transport_error(client: HttpClient) -> None:
    """A body shorter than its Content-Length, then a close: reading it raises."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")

    async with RawServer(handler) as server:
        response = await client.post(server.url(), b"", {})
        with pytest.raises(TransportError, match="before the answer was complete"):
            await response.read()
        response.release()


async def test_refused_connection_is_a_transport_error_with_its_cause(
    client: HttpClient,
) -> None:
    """Nothing listening: `TransportError` naming the address, the OSError as its cause."""
    async with RawServer(echo_forever()) as server:
        url = server.url()
    with pytest.raises(TransportError, match=r"could not connect to 127\.0\.0\.1") as caught:
        await client.post(url, b"", {})
    assert isinstance(caught.value.__cause__, OSError)


async def test_response_released_unread_closes_its_socket(client: HttpClient) -> None:
    """Left with body bytes unread, a connection cannot carry the next call: it is closed."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
            await writer.drain()
            if not await reader.read(1):  # the client closed on us
                return

    async with RawServer(handler) as server:
        first = await client.post(server.url(), b"", {})
        assert await first.readany() == b"half"
        first.release()
        second = await client.post(server.url(), b"", {})
        second.release()
        assert server.connections == 2


async def test_cancelled_call_closes_its_socket_and_frees_its_slot() -> None:
    """A call cut off by its caller's timeout leaves no socket and no slot behind."""
    lost = asyncio.Event()
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        await read_request(reader)
        calls += 1
        if calls > 1:
            writer.write(answer(b"second"))
            await writer.drain()
        elif not await reader.read(1):  # the first is never answered: the client gives up
            lost.set()

    http = HttpClient(max_connections=1)
    async with RawServer(handler) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await http.post(server.url(), b"", {})
        await asyncio.wait_for(lost.wait(), 10)
        # The one slot is free for the next call, on a new socket.
        response = await asyncio.wait_for(http.post(server.url(), b"", {}), 10)
        assert await response.read() == b"second"
        response.release()
        assert server.connections == 2
    await http.aclose()


async def test_max_connections_holds_the_next_call_until_one_is_released() -> None:
    """With two connections allowed, a third call waits for a release, then reuses it."""
    answer_now = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await answer_now.wait()
            writer.write(answer(b"ok"))
            await writer.drain()

    http = HttpClient(max_connections=2)
    async with RawServer(handler) as server:
        calls = [asyncio.create_task(http.post(server.url(), b"", {})) for _ in range(3)]
        while server.connections < 2:
            await asyncio.sleep(0.01)
        assert not any(c.done() for c in calls)
        answer_now.set()
        first_two = await asyncio.gather(*calls[:2])
        assert not calls[2].done()  # no slot until a response is released
        for response in first_two:
            await response.read()
            response.release()
        third = await asyncio.wait_for(calls[2], 10)
        assert await third.read() == b"ok"
        third.release()
        assert server.connections == 2
    await http.aclose()


async def test_idle_connection_past_its_idle_time_is_replaced() -> None:
    """Idle longer than `idle_timeout_s` (an injected clock): closed, and a new one dialled."""
    clock = FakeClock()
    http = HttpClient(idle_timeout_s=15.0, clock=clock)
    async with RawServer(echo_forever()) as server:
        for wait_s in (14.0, 16.0):
            clock.advance(wait_s)
            response = await http.post(server.url(), b"x", {})
            await response.read()
            response.release()
        assert server.connections == 2  # reused after 14 s idle, replaced after 16 s
    await http.aclose()


async def test_unread_stream_stops_the_socket_reading(client: HttpClient) -> None:
    """A reader that falls behind holds a bounded buffer; the server is made to wait."""
    body = b"e" * (8 * 1024 * 1024)
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        sent.set()

    async with RawServer(handler) as server:
        response = await client.post(server.url(), b"", {})
        connection = response._connection
        assert connection is not None
        for _ in range(500):
            if connection._reading_paused:
                break
            await asyncio.sleep(0.01)
        assert connection._reading_paused
        assert connection._buffered < 1024 * 1024 and not sent.is_set()
        assert await response.read() == body
        response.release()
        await asyncio.wait_for(sent.wait(), 10)


async def test_oversized_response_headers_are_refused(client: HttpClient) -> None:
    """A server that sends megabytes of headers gets a `TransportError`, not our memory."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(2000):
            writer.write(b"x-filler-%d: %s\r\n" % (n, b"f" * 1000))
            await writer.drain()

    async with RawServer(handler) as server:
        with pytest.raises(TransportError, match="not valid HTTP"):
            await client.post(server.url(), b"", {})


async def test_header_with_a_line_break_is_refused_before_sending(client: HttpClient) -> None:
    """A header value that would split the request is a ValueError; nothing is sent."""
    async with RawServer(echo_forever()) as server:
        with pytest.raises(ValueError, match="x-beta"):
            await client.post(server.url(), b"", {"x-beta": "a\r\nx-evil: 1"})
        assert server.connections == 0


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_tls(authority: trustme.CA, host: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host).configure_cert(context)
    return context


async def test_https_with_a_trusted_certificate(authority: trustme.CA) -> None:
    """TLS to a server whose certificate the client's trust store vouches for, kept alive."""
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    http = HttpClient(ssl_context=trusted)
    async with RawServer(echo_forever(), tls=server_tls(authority, "localhost")) as server:
        for _ in range(2):
            response = await http.post(server.url(host="localhost"), b"secret", {})
            assert await response.read() == b"secret"
            response.release()
        assert server.connections == 1
    await http.aclose()


async def test_https_with_a_certificate_for_another_host_is_refused(
    authority: trustme.CA,
) -> None:
    """A certificate issued for another name fails the host check: no request is sent."""
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    http = HttpClient(ssl_context=trusted)
    async with RawServer(echo_forever(), tls=server_tls(authority, "other.test")) as server:
        with pytest.raises(TransportError, match="could not connect") as caught:
            await http.post(server.url(host="localhost"), b"", {})
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    await http.aclose()


def test_one_client_serves_calls_from_one_event_loop_after_another() -> None:
    """A worker outlives an event loop (a test's, a restarted server's): the next loop's
    calls get new connections and their own limit, whatever the old loop left behind."""
    ready = threading.Event()
    port: list[int] = []
    server_loop = asyncio.new_event_loop()
    stop = server_loop.create_future()

    async def serve() -> None:
        handlers: list[asyncio.Task[None]] = []

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.create_task(echo_forever()(reader, writer)))

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await stop
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    thread = threading.Thread(target=server_loop.run_until_complete, args=(serve(),))
    thread.daemon = True
    thread.start()
    ready.wait(10)
    http = HttpClient(max_connections=1)

    async def call(text: bytes) -> bytes:
        response = await http.post(f"http://127.0.0.1:{port[0]}/x", text, {})
        body = await response.read()
        response.release()  # its connection stays pooled when this loop ends
        return body

    assert asyncio.run(call(b"first loop")) == b"first loop"
    assert asyncio.run(call(b"second loop")) == b"second loop"
    server_loop.call_soon_threadsafe(stop.set_result, None)
    thread.join(10)
    server_loop.close()
