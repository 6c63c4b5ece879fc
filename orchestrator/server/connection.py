"""`ConnectionLimits`: what one client connection may cost the server before it is cut off.

uvicorn's httptools protocol buffers a request's headers without limit, and arms no timer on a
connection until its first response, so a client that sends a 40 MB header, or one byte a
second, or nothing at all, holds memory and a file descriptor forever. `limited_protocol`
returns an `HttpToolsProtocol` that, before the app (and so before auth) sees anything:

- answers 431 and closes when a request's head (request line and headers) passes
  `max_header_bytes` or carries more than `max_headers` headers;
- closes a connection whose request head is not complete `header_timeout_s` after its first
  byte (or after the connection opened), however slowly the bytes trickle in;
- closes a connection whose request body stops arriving for `body_idle_timeout_s`;
- and answers 503 beyond `max_connections` open connections (uvicorn's `limit_concurrency`,
  capped below the process's file-descriptor limit) and closes such a connection as soon as
  it opens, so a flood of idle sockets never holds the descriptors `/health` needs.

`limited_ws_protocol` does the same for WebSockets: what the server has written and the client
has not read is held to `ws_write_buffer_bytes` (past it, the app's next send waits), and a
client that reads nothing for `write_stall_timeout_s` while data waits for it is cut off
(aborted: a close would wait forever for the buffer to drain), which ends the answer it
was streaming and with it the upstream call.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = [
    "ConnectionLimits",
    "OverCapLog",
    "connection_cap",
    "limited_protocol",
    "limited_ws_protocol",
]

# File descriptors kept free for everything that is not a client connection: upstream
# connections, the memory DB, log files, the event loop's own.
_SPARE_FDS = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """Per-connection bounds (see the module docstring). Raises ValueError for a value < 1
    (or <= 0 for a timeout)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    max_connections: int = 1024
    ws_write_buffer_bytes: int = 256 * 1024
    write_stall_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_connections",
                     "ws_write_buffer_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("header_timeout_s", "body_idle_timeout_s", "keep_alive_timeout_s",
                     "write_stall_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


def connection_cap(limits: ConnectionLimits) -> int:
    """`limits.max_connections`, lowered to fit the process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(1, min(limits.max_connections, soft - _SPARE_FDS))


class OverCapLog(logging.Filter):
    """A connection refused past the cap is logged as uvicorn logs a request it refuses,
    "Exceeded concurrency limit." on `uvicorn.error`: at overload, thousands of lines a
    second, written while the server is already short of CPU. This filter (on that logger)
    lets one through every `every_s`, saying how many were held back since the last."""

    MESSAGE = "Exceeded concurrency limit."

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._every_s = every_s
        self._clock = clock
        self._next_at = float("-inf")
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        now = self._clock()
        if now < self._next_at:
            self._held_back += 1
            return False
        if self._held_back:
            record.msg = (f"{self.MESSAGE} ({self._held_back} more refused since the last "
                          f"report; one line per {self._every_s:g}s)")
        self._next_at, self._held_back = now + self._every_s, 0
        return True

    @classmethod
    def install(cls) -> None:
        """On the `uvicorn.error` logger, once per process."""
        logger = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())


def _head_response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
        + message
    )


_TOO_LARGE = _head_response(
    b"431 Request Header Fields Too Large", b"request headers too large or too many"
)


_OVER_CAP = _head_response(b"503 Service Unavailable", b"too many connections; try again")


def limited_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """An `HttpToolsProtocol` class enforcing `limits` (pass it as uvicorn's `http`, with
    `limit_concurrency` above `connection_cap(limits)`: uvicorn answers 503 to *every*
    request once the connections reach its limit, where this refuses only the connection
    past the cap, at once, and serves each of the others)."""
    cap = connection_cap(limits)
    refusals = logging.getLogger("uvicorn.error")

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._head_count = 0
            self._in_head = True
            self._read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > cap:
                # Over the cap: answer and let go of the descriptor now, not when the client
                # gets round to sending a request (idle ones would hold it till the timeout).
                refusals.warning(OverCapLog.MESSAGE)  # one line per interval: OverCapLog
                transport.write(_OVER_CAP)
                transport.close()
                return
            self._arm(limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
            elif self.cycle is not None and self.cycle.more_body:
                self._arm(limits.body_idle_timeout_s)  # the body is still coming: idle timer
            super().data_received(data)
            if self._in_head and self._head_bytes > limits.max_header_bytes:
                self._refuse()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes, self._head_count = True, 0, 0
            if self._read_timer is None:
                self._arm(limits.header_timeout_s)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_count += 1
            if self._head_count > limits.max_headers:
                self._refuse()
                raise httptools.HttpParserError("too many headers")  # stop the parser here
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.more_body:
                self._arm(limits.body_idle_timeout_s)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._in_head, self._head_bytes = True, 0  # a keep-alive connection's next request

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            super().handle_websocket_upgrade()

        def send_400_response(self, msg: str) -> None:
            if self.transport.is_closing():
                return  # already refused (431) from inside the parser
            super().send_400_response(msg)

        def _refuse(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

        def _arm(self, delay_s: float) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(delay_s, self._on_read_timeout)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _on_read_timeout(self) -> None:
            self._read_timer = None
            if not self._in_head and self.flow.read_paused:
                # The app has not read what came yet: the client is not the one stalling.
                self._arm(limits.body_idle_timeout_s)
                return
            if not self.transport.is_closing():
                self.transport.close()

    return LimitedHttpToolsProtocol


def limited_ws_protocol(limits: ConnectionLimits) -> type[WebSocketsSansIOProtocol]:
    """A websockets-sansio protocol class enforcing `limits` (pass it as uvicorn's `ws`)."""

    class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
        _stall_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            # pause_writing (so the app's sends wait) once this much is unread by the client.
            self.transport.set_write_buffer_limits(high=limits.ws_write_buffer_bytes)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stall_timer is None:
                self._stall_timer = self.loop.call_later(
                    limits.write_stall_timeout_s, self._on_stall
                )

        def resume_writing(self) -> None:
            super().resume_writing()
            self._cancel_stall()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_stall()
            super().connection_lost(exc)

        def _cancel_stall(self) -> None:
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None

        def _on_stall(self) -> None:
            self._stall_timer = None
            self.transport.abort()

    return LimitedWebSocketProtocol
