"""`RequestCounts`: every HTTP request and WebSocket the app saw, by route and status.

The counting middleware (`CountRequests`) sits outside every other one, so a request the
origin guard (421/403), auth (401), the body limit (413), a body check (400, 415) or the
pipeline (429, 503, …) turns away is counted like one that was answered. Labels are bounded
whatever a client sends: the route is the template of the route that matched (`/v1/prompt`,
`/mcp`), never the raw path, and a path no route matches counts under `other`; the status is
the one the app sent (`101` for an accepted WebSocket, `403` for one closed before its
handshake, `499` when the client left before any answer, `500` for an exception nothing
answered). What the connection layer refuses before the app sees a request (431 headers, the
connection limit's 503, timeouts) is not counted here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["OTHER_ROUTE", "CountRequests", "RequestCounts"]

OTHER_ROUTE = "other"
"""The route label of a path no route matches."""

_CLIENT_LEFT = 499  # nginx's "client closed request": no answer was started


class RequestCounts:
    """Counts by (route template, status), and the route label of a request.

    `routes` (the app's) are read at the first request, when they are all declared; routers
    included in them are walked for their own routes.
    """

    __slots__ = ("_counts", "_patterns", "_routes", "_static")

    def __init__(self, routes: Iterable[BaseRoute] = ()) -> None:
        self._routes = routes
        self._counts: dict[tuple[str, int], int] = {}
        self._static: frozenset[str] | None = None  # templates without parameters
        self._patterns: tuple[tuple[re.Pattern[str], str], ...] = ()  # with parameters, mounts

    def record(self, route: str, status: int) -> None:
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1

    def route_of(self, path: str) -> str:
        """The label of the route serving `path`: its path template, or `OTHER_ROUTE`."""
        if self._static is None:
            self._learn_routes()
            assert self._static is not None
        if path in self._static:
            return path
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return OTHER_ROUTE

    def _learn_routes(self) -> None:
        static: set[str] = set()
        patterns: list[tuple[re.Pattern[str], str]] = []
        for template, pattern in _templates(self._routes):
            if pattern is None:
                static.add(template)
            else:
                patterns.append((pattern, template))
        self._static, self._patterns = frozenset(static), tuple(patterns)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def items(self) -> Iterator[tuple[str, int, int]]:
        """(route, status, count), sorted by route then status."""
        for (route, status), count in sorted(self._counts.items()):
            yield route, status, count

    def to_dict(self) -> dict[str, Any]:
        """`{"total": n, "by_route": {route: {status: count}}}` (statuses as strings, as JSON
        keys must be)."""
        by_route: dict[str, dict[str, int]] = {}
        for route, status, count in self.items():
            by_route.setdefault(route, {})[str(status)] = count
        return {"total": self.total, "by_route": by_route}


class CountRequests:
    """ASGI middleware recording each HTTP request and WebSocket in `counts` (see the module
    docstring for the labels)."""

    def __init__(self, app: ASGIApp, *, counts: RequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if not status:
                match message["type"]:
                    case "http.response.start" | "websocket.http.response.start":
                        status = int(message["status"])
                    case "websocket.accept":
                        status = 101
                    case "websocket.close":
                        status = 403  # closed before the handshake: refused
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except BaseException as exc:
            if not status:
                status = 500 if isinstance(exc, Exception) else _CLIENT_LEFT
            raise
        finally:
            self.counts.record(self.counts.route_of(scope["path"]), status or _CLIENT_LEFT)


def _templates(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, re.Pattern[str] | None]]:
    """(template, regex) of each route (regex None: the path is the template itself), the
    routes of included routers among them (FastAPI wraps each `include_router` in a route
    holding the `original_router`); a mount is one route, labelled with its path."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _templates(included.routes)
            continue
        pattern = getattr(route, "path_regex", None)
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(pattern, re.Pattern) or not isinstance(template, str) or not template:
            continue
        if isinstance(route, Mount):
            yield route.path, re.compile(re.escape(route.path) + "(/.*)?$")
        elif "{" in template:
            yield template, pattern
        else:
            yield template, None
