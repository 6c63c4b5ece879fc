"""`HotRoutes`: the gateway's hottest routes served ahead of the framework's own layers.

FastAPI's per-request routing (its route walk, dependency solving, endpoint context) cost about
as much CPU as the whole `/v1/messages` handler, which reads its body and headers itself
anyway; and in front of our middleware FastAPI and Starlette stack three layers of their own
(server errors, a telemetry hook, a body limit), each a coroutine and a wrapped `send` per
request, that the hot route does not need: it answers its errors itself, with the app's own
exception handlers, and our `BodyLimit` bounds its body. So `POST /v1/messages` is
dispatched here, at the top of the app, through its own copy of the app's middleware (origin
guard, auth, body limit, request counts: every request still passes them, in the same order),
so a client sees exactly what the FastAPI route answered. The FastAPI route stays declared for
the OpenAPI document and for anything this dispatch does not take (another method, a trailing
slash).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["Endpoint", "HotRouteApp", "HotRoutes"]

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """ASGI app serving `routes` (`(method, path)` → endpoint) itself, through `middleware`
    (applied in the order given, outermost first, as Starlette applies it); an exception an
    endpoint raises goes to the first of `handlers` (the app's exception handlers, looked up
    along the exception's class hierarchy, as Starlette does) and re-raised when none takes it.
    Everything else goes on to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Mapping[tuple[str, str], Endpoint],
        handlers: Mapping[Any, ExceptionHandler],
        middleware: Iterable[Middleware] = (),
    ) -> None:
        self.app = app
        self._routes = dict(routes)
        self._handlers = handlers  # the app's own dict: handlers added later count too
        lane: ASGIApp = self._serve
        for cls, args, kwargs in reversed(list(middleware)):
            lane = cls(lane, *args, **kwargs)
        self._lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self._routes:
            await self._lane(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self._routes[(scope["method"], scope["path"])](request)
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        for cls in type(exc).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return await handler(request, exc)
        raise exc


class HotRouteApp(FastAPI):
    """A FastAPI app whose `hot_routes` are served by `HotRoutes` at the top of its stack,
    through the app's middleware (`add_middleware`) but none of the framework's own layers."""

    hot_routes: Mapping[tuple[str, str], Endpoint] = {}

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if not self.hot_routes:
            return stack
        return HotRoutes(
            stack,
            routes=self.hot_routes,
            handlers=self.exception_handlers,
            middleware=self.user_middleware,
        )
