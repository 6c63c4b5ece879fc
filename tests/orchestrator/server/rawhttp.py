"""Raw-socket helpers for probing the server as an attacker would (no HTTP client to tidy up)."""

from __future__ import annotations

import contextlib
import socket
import time
from urllib.parse import urlsplit


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(url: str, *, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=timeout_s)
    return sock


def exchange(url: str, raw: bytes, *, timeout_s: float = 5.0) -> bytes:
    """Send `raw`, then read until the server closes (or `timeout_s`): everything it sent."""
    with connect(url, timeout_s=timeout_s) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)  # the server may refuse before it has read everything
        return read_until_closed(sock, timeout_s=timeout_s)


def read_until_closed(sock: socket.socket, *, timeout_s: float = 5.0) -> bytes:
    """Everything received until the peer closes; raises TimeoutError if it never does."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            raise TimeoutError(f"the server kept the connection open; got {data[:200]!r}") from None
        if not chunk:
            return data
        data += chunk


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    return int(response.split(b" ", 2)[1])


def request(method: str, path: str, host: str, *headers: str, body: bytes = b"") -> bytes:
    """A raw HTTP/1.1 request closing the connection after the answer."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
