"""`BodyLimit`: refuse request bodies over a size with 413, in the caller's API dialect.

Each route has its own limit (`ROUTE_LIMITS`: a prompt, feedback or a config change is small;
the gateway doors carry whole agent conversations), never above the server's `max_bytes`
(`MAX_BODY_BYTES`). A declared `Content-Length` over the limit is refused before the body is
read; a chunked body is counted as it arrives and refused when the sum crosses the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.server.http_errors import ApiError, dialect_of, error_response

__all__ = ["PROMPT_BODY_BYTES", "ROUTE_LIMITS", "BodyLimit", "too_large"]

PROMPT_BODY_BYTES = 4 * 1024 * 1024
"""One prompt to `/v1/prompt` or `WS /v1/stream`: ~1M tokens of text, more than any model reads."""

ROUTE_LIMITS: dict[str, int] = {
    "/v1/prompt": PROMPT_BODY_BYTES,
    "/v1/feedback": 16 * 1024,
    "/v1/feedback/task": 16 * 1024,
    "/v1/config": 64 * 1024,
    "/mcp": PROMPT_BODY_BYTES,  # batch_infer carries several prompts
}
"""Per-route body limits; a route not named here gets the server's `max_bytes`."""


def too_large(limit_bytes: int, path: str | None = None) -> ApiError:
    """The 413 error for a body over `limit_bytes` (the limit of `path`, when given)."""
    where = f" (the limit for {path})" if path else ""
    return ApiError(
        status=413,
        kind="request_too_large",
        message=f"request body is larger than {limit_bytes} bytes{where}",
        field="body",
        anthropic_type="request_too_large",
    )


class BodyLimit:
    """ASGI middleware refusing HTTP request bodies larger than their route's limit
    (`routes`, default `ROUTE_LIMITS`), and any larger than `max_bytes`."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, routes: dict[str, int] | None = None
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes
        self.routes = dict(ROUTE_LIMITS if routes is None else routes)

    def limit_for(self, path: str) -> int:
        """The body limit of `path` (a mount such as `/mcp` covers what is under it)."""
        limit = self.routes.get(path.rstrip("/") or "/")
        if limit is None:
            mount = "/" + path.lstrip("/").split("/", 1)[0]
            limit = self.routes.get(mount, self.max_bytes)
        return min(limit, self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.limit_for(path)
        shown = path if limit < self.max_bytes else None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server rejects a malformed length itself
                if declared > limit:
                    response = error_response(too_large(limit, shown), dialect_of(path))
                    response.headers["connection"] = "close"
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large(limit, shown).message)
            return message

        await self.app(scope, counted, send)
