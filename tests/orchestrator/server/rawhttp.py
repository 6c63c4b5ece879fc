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


def ws_open(
    url: str, path: str, *headers: str, timeout_s: float = 5.0
) -> tuple[socket.socket, bytes]:
    """A WebSocket opened by hand (no client library reading in the background): the socket
    and the server's handshake response head."""
    sock = connect(url, timeout_s=timeout_s)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {address(url)[0]}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *headers,
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return sock, head


def ws_text_frame(text: str) -> bytes:
    """One masked text frame, as a client must send it (the mask is zeros: XOR is identity)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return b"\x81" + length + b"\x00\x00\x00\x00" + payload
