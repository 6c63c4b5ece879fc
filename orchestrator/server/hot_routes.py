"""`HotRoutes`: the gateway's hottest routes served straight from the middleware stack.

FastAPI's per-request routing (its route walk, dependency solving, endpoint context) cost about
as much CPU as the whole `/v1/messages` handler, which reads its body and headers itself
anyway. So `POST /v1/messages` is dispatched here, inside the same middleware as every other
route (origin guard, auth, body limit), and its errors are answered by the app's own
exception handlers, so a client sees exactly what the FastAPI route answered. The FastAPI
route stays declared for the OpenAPI document and for anything this dispatch does not take
(another method, a trailing slash).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Endpoint", "HotRoutes"]

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """ASGI middleware serving `routes` (`(method, path)` → endpoint) itself; an exception an
    endpoint raises goes to the first of `handlers` (the app's exception handlers, looked up
    along the exception's class hierarchy, as Starlette does) and re-raised when none takes it.
    Everything else goes on to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[tuple[str, str], Endpoint],
        handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        self._routes = dict(routes)
        self._handlers = handlers  # the app's own dict: handlers added later count too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self._routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                request = Request(scope, receive, send)
                try:
                    response = await endpoint(request)
                except Exception as exc:
                    response = await self._handled(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)
        raise exc
