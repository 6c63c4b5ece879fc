"""`OriginGuard`: only the server's own names and pages may use it (DNS rebinding, cross-site).

A web page the operator visits can make the browser call `http://127.0.0.1:8080`: either
directly (a cross-site `fetch`, `<form>` or WebSocket, which carries the page's `Origin`), or by
DNS rebinding (the page's own name re-resolved to 127.0.0.1, so the request carries
`Host: attacker.example` and counts as same-origin for the browser). Without a token the server
would answer both. So, before anything else runs:

- the `Host` must be an IP address literal (a rebound name is never one), `localhost` or a name
  under `.localhost`, or one of the configured `allowed_hosts` (`ALLOWED_HOSTS`, for a server
  reached by name; `*` allows any); otherwise 421 Misdirected Request;
- a request that carries an `Origin` (browsers send it on WebSockets and on every non-GET
  request) must come from the server's own origin (the same host and port as `Host`), and one
  whose `Sec-Fetch-Site` says `cross-site` is refused too; otherwise 403.

A request carrying this process's own `x-orchestrator-hop` id (which every worker sends
upstream) looped back: an upstream URL points at the server itself. It gets 508 at once, instead
of waiting on itself until its deadline.

Clients that are not browsers (SDKs, curl, agents) send neither header and are unaffected. The
server sends no CORS headers, so no other origin can read an answer either.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.providers._http import HOP_HEADER, HOP_ID
from orchestrator.server.http_errors import ApiError, dialect_of, error_response

__all__ = ["OriginGuard", "host_allowed"]


def _hostname(authority: str) -> str:
    """`"Example.com:8080"` → `"example.com"`, `"[::1]:80"` → `"::1"`."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    if authority.count(":") > 1:  # a bare IPv6 address
        return authority
    return authority.partition(":")[0].rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str, allowed_hosts: Iterable[str] = ()) -> bool:
    """Whether a request with `Host: host_header` may be served (see the module docstring)."""
    return _host_allowed(host_header, tuple(allowed_hosts))


@functools.lru_cache(maxsize=1024)  # per request it parsed an IP address: a client sends one
def _host_allowed(host_header: str, allowed_hosts: tuple[str, ...]) -> bool:
    name = _hostname(host_header)
    if not name:
        return False
    if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
        return True
    allowed = {_hostname(h) for h in allowed_hosts}
    return "*" in allowed or name in allowed


def _refusal(status: int, message: str) -> ApiError:
    return ApiError(
        status=status,
        kind="forbidden",
        message=message,
        anthropic_type="permission_error",
        openai_type="invalid_request_error",
        openai_code="forbidden",
    )


class OriginGuard:
    """ASGI middleware refusing requests whose `Host` is not one of the server's names, and
    browser requests from another origin (HTTP 421/403 in the caller's dialect; a WebSocket is
    refused before its handshake completes)."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed_hosts = tuple(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": problem.message})
            return
        response = error_response(problem, dialect_of(scope["path"]))
        await response(scope, receive, send)

    def _problem(self, scope: Scope) -> ApiError | None:
        host = origin = fetch_site = None
        for name, value in scope["headers"]:
            if name == _HOP and value.decode("latin-1") == HOP_ID:
                return _LOOP
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                fetch_site = value.decode("latin-1").strip().lower()
        if host is None or not host_allowed(host, self.allowed_hosts):
            return _refusal(
                421,
                f"host {_hostname(host or '')!r} is not a name of this server: use 127.0.0.1 "
                "or localhost, or add the name to ALLOWED_HOSTS",
            )
        if origin is not None and not _same_origin(origin, host):
            return _refusal(403, "cross-origin requests are refused")
        if fetch_site == "cross-site":
            return _refusal(403, "cross-site requests are refused")
        return None


_HOP = HOP_HEADER.encode()
_LOOP = ApiError(
    status=508,
    kind="loop_detected",
    message=(
        "this request came from this server itself: an upstream URL (ANTHROPIC_UPSTREAM_URL, "
        "OPENAI_UPSTREAM_URL or LLAMA_CPP_URL) points at the server; point it at the provider"
    ),
    anthropic_type="api_error",
    openai_type="server_error",
    openai_code="loop_detected",
)


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file: pages) and the like
    default_port = "443" if parts.scheme == "https" else "80"
    return _authority(parts.netloc, default_port) == _authority(host.lower(), default_port)


def _authority(authority: str, default_port: str) -> tuple[str, str]:
    name = _hostname(authority)
    rest = authority.strip().rpartition("]")[2] if authority.startswith("[") else authority
    port = rest.rpartition(":")[2] if ":" in rest and rest.count(":") == 1 else default_port
    return name, port or default_port
