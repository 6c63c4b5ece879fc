"""Bearer-token auth for the whole server, as plain ASGI middleware (no per-request task).

A client proves itself with `Authorization: Bearer <token>` or `x-api-key: <token>` (what the
Anthropic SDK sends), so SDK programs work by setting their API key to the server's token.
A browser cannot send headers when it opens a page or an EventSource, so the dashboard (and
only it) also takes `?token=<token>`; a browser that opens it without one gets a small page
asking for the token instead of a JSON 401. `/health` stays open for liveness probes (it shows
details only to callers that send the token: `is_authenticated`), and so does `/`, which only
leads to the dashboard.

Two tokens, two roles: the client token (`API_KEY`) may use every route; the admin token
(`ADMIN_API_KEY`) may also change the live configuration (`PATCH /v1/config`, MCP
`configure_pipeline`). Without an admin token the client token is both; with only an admin
token every route is open and changing the configuration needs it. Routes ask `is_admin`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from enum import StrEnum
from urllib.parse import parse_qsl

from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.logging_setup import mask_secrets
from orchestrator.server.http_errors import ApiError, dialect_of, error_response
from orchestrator.usage import client_label

__all__ = [
    "AGENT_HEADER",
    "OPEN_PATHS",
    "QUERY_TOKEN_PATHS",
    "Role",
    "TokenAuth",
    "client_of",
    "is_admin",
    "is_authenticated",
]

OPEN_PATHS = frozenset({"/health", "/"})
_ROLE = "orchestrator.role"  # the scope key TokenAuth sets: a Role, or None on an open path


class Role(StrEnum):
    """What a request's token lets it do."""

    CLIENT = "client"  # every route, but not changing the configuration
    ADMIN = "admin"  # every route, the configuration included


_TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>prompt-orchestrator: token</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}
input{font:inherit;width:100%;margin:.5rem 0;padding:.4rem}</style></head>
<body><h1>Dashboard</h1>
<p>This server needs its token (the <code>API_KEY</code> it was started with).</p>
<form method="get" action="/dashboard">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button type="submit">Open the dashboard</button></form></body></html>
"""

_UNAUTHORIZED = ApiError(
    status=401,
    kind="unauthorized",
    message="missing or wrong API key: send 'Authorization: Bearer <API_KEY>' or 'x-api-key'",
    anthropic_type="authentication_error",
    openai_type="invalid_request_error",
    openai_code="invalid_api_key",
)


_DENIAL = "websocket.http.response"  # the ASGI extension: an HTTP answer to an upgrade

QUERY_TOKEN_PATHS = frozenset({"/dashboard", "/dashboard/", "/dashboard/events"})


def _presented_token(scope: Scope) -> bytes | None:
    if scope["path"] in QUERY_TOKEN_PATHS and scope.get("method", "GET") == "GET":
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if key == "token":
                return value.encode("latin-1")
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
        elif name == b"x-api-key":
            return value.strip()
    return None


class TokenAuth:
    """Refuses HTTP requests and WebSocket upgrades that carry neither `token` nor
    `admin_token` with a 401 (the JSON error in the caller's API dialect and
    `WWW-Authenticate: Bearer`), and records each request's `Role`. An upgrade gets that 401
    as its HTTP answer where the ASGI server offers the `websocket.http.response` extension
    (uvicorn's websockets implementations do); elsewhere it is closed (1008) before the
    handshake, which the server answers as it does (uvicorn: 403).

    `token` None leaves every route open (as `Role.CLIENT`); `admin_token` None makes `token`
    the admin token too. At least one must be given.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, admin_token: str | None = None) -> None:
        if token == "" or admin_token == "":
            raise ValueError("token and admin_token must be non-empty strings (or None)")
        if token is None and admin_token is None:
            raise ValueError("token: give a client token, an admin token, or both")
        self.app = app
        self._token = token.encode() if token is not None else None
        self._admin_token = (admin_token or token or "").encode()

    def _role(self, presented: bytes | None) -> Role | None:
        if presented is not None and hmac.compare_digest(presented, self._admin_token):
            return Role.ADMIN
        if self._token is None:
            return Role.CLIENT
        if presented is not None and hmac.compare_digest(presented, self._token):
            return Role.CLIENT
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        role = self._role(_presented_token(scope))
        if role is not None or scope["path"] in OPEN_PATHS:
            scope[_ROLE] = role
            await self.app(scope, receive, send)
            return
        if kind == "websocket" and _DENIAL not in scope.get("extensions", {}):
            # A server that cannot answer the upgrade with a response of ours refuses it as
            # it does any closed-before-accept socket (uvicorn's websockets: 403).
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        if _wants_page(scope):
            response = HTMLResponse(_TOKEN_PAGE, status_code=401)
        else:
            response = error_response(_UNAUTHORIZED, dialect_of(scope["path"]))
        response.headers["www-authenticate"] = "Bearer"
        await response(scope, receive, send)


def is_authenticated(scope: Scope) -> bool:
    """Whether the request in `scope` proved a token (True on a server without any)."""
    return scope.get(_ROLE, Role.ADMIN) is not None


def is_admin(scope: Scope) -> bool:
    """Whether the request in `scope` may change the configuration: it proved the admin token
    (True on a server without any token)."""
    return scope.get(_ROLE, Role.ADMIN) is Role.ADMIN


AGENT_HEADER = "x-orchestrator-agent"
"""The request header naming the agent that sends it (the usage ledger's client label)."""

_MIN_SECRET_OVERLAP = 4  # a label this long found inside a token is taken as part of it


def client_of(scope: Scope, secrets: Iterable[str] = ()) -> str:
    """Who the request in `scope` is for the usage ledger: its `x-orchestrator-agent` header
    made safe (`client_label`), else its role (`admin`, `client`, or `anonymous` on a server
    without tokens or an open path).

    Never a token: a header that contains one of `secrets` (any case), is part of one, or is
    shaped like a key falls back to the role."""
    raw = next((v for n, v in scope.get("headers", ()) if n == AGENT_HEADER.encode()), None)
    if raw is not None:
        text = raw.decode("latin-1")
        label = client_label(text)
        if label is not None and not _names_secret(text, label, secrets):
            return label
    role = scope.get(_ROLE)
    return "anonymous" if role is None else str(role)


def _names_secret(text: str, label: str, secrets: Iterable[str]) -> bool:
    if mask_secrets(text) != text:
        return True
    lowered, low_label = text.lower(), label.lower()
    for secret in secrets:
        low_secret = secret.lower()
        if low_secret in lowered or (
            len(low_label) >= _MIN_SECRET_OVERLAP and low_label in low_secret
        ):
            return True
    return False


def _wants_page(scope: Scope) -> bool:
    if scope["path"] not in ("/dashboard", "/dashboard/") or scope.get("method") != "GET":
        return False
    accept = next((v for n, v in scope["headers"] if n == b"accept"), b"")
    return b"text/html" in accept
