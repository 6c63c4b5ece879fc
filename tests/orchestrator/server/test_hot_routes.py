"""The lean path of `POST /v1/messages` (`HotRoutes`): the same answers, headers and errors as
the FastAPI route it stands in front of, and the same documentation."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from conftest import echo_pipeline
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from orchestrator.server import create_app
from orchestrator.server.hot_routes import HotRouteApp, HotRoutes

BODY = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def _app_with_hot_route(endpoint: Callable[[Request], object]) -> Starlette:
    async def on_lookup(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"handled {type(exc).__name__}", status_code=418)

    async def slow(request: Request) -> Response:
        return PlainTextResponse("the router")

    app = Starlette(routes=[Route("/hot", slow, methods=["GET", "POST"])])
    app.add_exception_handler(LookupError, on_lookup)
    app.add_middleware(
        HotRoutes, routes={("POST", "/hot"): endpoint}, handlers=app.exception_handlers
    )
    return app


def test_a_hot_route_is_served_and_the_rest_go_to_the_router() -> None:
    """The `(method, path)` listed is answered by its endpoint; another method goes on."""

    async def hot(request: Request) -> Response:
        return PlainTextResponse("hot " + (await request.body()).decode())

    with TestClient(_app_with_hot_route(hot)) as client:
        assert client.post("/hot", content=b"body").text == "hot body"
        assert client.get("/hot").text == "the router"


def test_an_error_is_answered_by_the_apps_handler_for_its_class() -> None:
    """An exception goes to the handler registered for it or for a base class."""

    async def fails(request: Request) -> Response:
        raise KeyError("x")  # a LookupError

    with TestClient(_app_with_hot_route(fails)) as client:
        answer = client.post("/hot")
    assert (answer.status_code, answer.text) == (418, "handled KeyError")


def test_an_error_no_handler_takes_is_raised_on() -> None:
    """Without a handler the exception propagates (to the server's error middleware)."""

    async def fails(request: Request) -> Response:
        raise RuntimeError("boom")

    with TestClient(_app_with_hot_route(fails), raise_server_exceptions=False) as client:
        assert client.post("/hot").status_code == 500


class Mark:
    """Middleware that notes its name on every request it passes on."""

    def __init__(self, app: object, *, name: str, seen: list[str]) -> None:
        self.app, self.name, self.seen = app, name, seen

    async def __call__(self, scope: dict, receive: object, send: object) -> None:
        if scope["type"] == "http":
            self.seen.append(self.name)
        await self.app(scope, receive, send)  # type: ignore[operator]


def test_a_hot_route_app_passes_its_middleware_once_and_in_order() -> None:
    """`HotRouteApp`: a hot route and an ordinary one both go through the app's middleware,
    outermost first, exactly once each."""
    seen: list[str] = []
    app = HotRouteApp()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        return {"from": "the router"}

    async def hot(request: Request) -> Response:
        return PlainTextResponse("hot")

    app.hot_routes = {("POST", "/hot"): hot}
    app.add_middleware(Mark, name="inner", seen=seen)
    app.add_middleware(Mark, name="outer", seen=seen)
    with TestClient(app) as client:
        assert client.post("/hot").text == "hot"
        assert seen == ["outer", "inner"]
        seen.clear()
        assert client.get("/slow").json() == {"from": "the router"}
        assert seen == ["outer", "inner"]


def test_an_overlong_header_is_the_same_400_as_before(start_server: Callable[..., str]) -> None:
    """A header over its limit gets a 400 naming it, as FastAPI's `Header(max_length)` did."""
    url = start_server(echo_pipeline())
    answer = httpx.post(url + "/v1/messages", json=BODY, headers={"anthropic-beta": "b" * 2049})
    assert answer.status_code == 400
    assert answer.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "anthropic-beta: String should have at most 2048 characters",
        },
    }
    assert httpx.post(url + "/v1/messages", json=BODY).status_code == 200


def test_the_openapi_document_still_lists_the_route_and_its_headers() -> None:
    """`/v1/messages` keeps its request body and its three headers in the OpenAPI document."""
    operation = create_app(echo_pipeline()).openapi()["paths"]["/v1/messages"]["post"]
    headers = {p["name"]: p["schema"]["anyOf"][0]["maxLength"] for p in operation["parameters"]}
    assert headers == {"anthropic-beta": 2048, "anthropic-version": 64, "x-stainless-timeout": 64}
    assert "application/json" in operation["requestBody"]["content"]
