"""`BodyLimit`: refuse request bodies over a size with 413, in the caller's API dialect.

A declared `Content-Length` over the limit is refused before the body is read; a chunked body
is counted as it arrives and refused when it crosses the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.server.http_errors import ApiError, dialect_of, error_response

__all__ = ["BodyLimit", "too_large"]


def too_large(limit_bytes: int) -> ApiError:
    """The 413 error for a body over `limit_bytes`."""
    return ApiError(
        status=413,
        kind="request_too_large",
        message=f"request body is larger than {limit_bytes} bytes",
        field="body",
        anthropic_type="request_too_large",
    )


class BodyLimit:
    """ASGI middleware refusing HTTP request bodies larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server rejects a malformed length itself
                if declared > self.max_bytes:
                    response = error_response(too_large(self.max_bytes), dialect_of(scope["path"]))
                    response.headers["connection"] = "close"
                    await response(scope, receive, send)
                    return
                break
        received = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large(limit).message)
            return message

        await self.app(scope, counted, send)
