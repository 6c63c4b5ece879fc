"""A server process under test: a free loopback port, and waiting until it answers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], *, timeout_s: float = 60.0,
    statuses: tuple[int, ...] = (200,), printed: Callable[[], object] | None = None,
) -> None:
    """Return once `url`/health answers one of `statuses`; raise RuntimeError with what the
    process printed (`printed()`, else its piped stderr) if it exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/health", timeout=1).status_code in statuses:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            if printed is not None:
                output = printed()
            else:
                output = process.stderr.read() if process.stderr is not None else b""
            raise RuntimeError(f"server did not start: {output!r}")
        time.sleep(0.05)  # polling for the process to listen, not waiting for time to pass
