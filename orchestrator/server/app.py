"""`create_app`: the HTTP front door over a `Pipeline`.

    app = create_app(pipeline, settings=settings)

The routers live in their own modules (`prompt_api`, `anthropic_api`, `openai_api`,
`responses_api`, `responses_ws`, `prometheus`, …, and the `/mcp` and `/dashboard` mounts);
this module only wires them, the auth middleware, the body limit and the error handlers that
keep every client mistake a 4xx in the caller's API dialect.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from orchestrator.config import LiveConfigSet
from orchestrator.errors import OrchestratorError
from orchestrator.pipeline import Pipeline
from orchestrator.server import (
    anthropic_api,
    completions_api,
    config_api,
    embeddings_api,
    openai_api,
    prometheus,
    prompt_api,
    responses_api,
    responses_ws,
)
from orchestrator.server.auth import TokenAuth
from orchestrator.server.body_limit import BodyLimit
from orchestrator.server.dashboard import mount_dashboard
from orchestrator.server.docs_page import mount_docs
from orchestrator.server.embedder import LazyEmbedder
from orchestrator.server.hot_routes import HotRouteApp
from orchestrator.server.http_errors import (
    ApiError,
    dialect_of,
    error_response,
    from_exception,
    validation_error,
)
from orchestrator.server.mcp import mount_mcp
from orchestrator.server.origin import OriginGuard
from orchestrator.server.request_counts import CountRequests, RequestCounts
from orchestrator.server.state import ServerState
from orchestrator.server.status import FleetStatus, SelfTuneStatus
from orchestrator.settings import DEFAULT_MAX_BODY_BYTES, ServerSettings

if TYPE_CHECKING:
    from intelligence.embed import Embedder

__all__ = ["FleetStatus", "create_app"]

log = logging.getLogger(__name__)



def create_app(
    pipeline: Pipeline,
    *,
    settings: ServerSettings | None = None,
    fleet_status: FleetStatus | None = None,
    config: LiveConfigSet | None = None,
    self_tune_status: SelfTuneStatus | None = None,
    embedder: Embedder | None = None,
    start_pipeline: bool = True,
) -> FastAPI:
    """The FastAPI app serving `pipeline`.

    With `start_pipeline` (the default) the app starts the pipeline when the server starts and
    closes it when the server stops, in the server's event loop; pass False when you run the
    pipeline yourself in that loop. `settings` gives the bearer token (`api_key`) and the body
    limit; None means no auth and the default limit. `fleet_status`, when
    given, is called on each `GET /v1/status` and its result shown under `"fleet"`. `config`
    is what `/v1/config` and MCP `configure_pipeline` read and tune (default: the pipeline's
    live config alone; the coordinator adds the fleet's). `embedder` serves `/v1/embeddings`
    (default: the intelligence layer's `DefaultEmbedder`, imported on the first request).
    `self_tune_status` is shown under `"self_tune"` like `fleet_status`.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not start_pipeline:
            yield
            return
        async with pipeline:
            yield

    max_body_bytes = settings.max_body_bytes if settings is not None else DEFAULT_MAX_BODY_BYTES
    app = HotRouteApp(
        title="prompt-orchestrator",
        summary="The inference pipeline's HTTP API, with Anthropic- and OpenAI-compatible doors.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI comes from a CDN: /docs is our own page (docs_page)
        redoc_url=None,
        # No OpenTelemetry here (metrics are Prometheus'): FastAPI's own checks whether it is
        # configured ran on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # Starlette's trailing-slash redirect is absolute, built from the request's Host (and it
    # keeps the query, a dashboard token included): the routes that need both forms have both.
    app.router.redirect_slashes = False
    config = config if config is not None else LiveConfigSet(pipeline.live)
    requests = RequestCounts(app.router.routes)
    state = ServerState(
        pipeline=pipeline,
        config=config,
        settings=settings,
        fleet_status=fleet_status,
        embedder=LazyEmbedder(embedder),
        self_tune_status=self_tune_status,
        requests=requests,
    )
    app.state.orchestrator = state
    # The hot routes first: each request walks the routes in order until one matches.
    app.include_router(anthropic_api.router)
    app.include_router(openai_api.router)
    app.include_router(prompt_api.router)
    app.include_router(config_api.router)
    app.include_router(responses_api.router)
    app.include_router(responses_ws.router)
    app.include_router(completions_api.router)
    app.include_router(embeddings_api.router)
    feedback = pipeline.feedback
    app.include_router(prometheus.router(pipeline.snapshot, lambda: feedback.received_total,
                                         fleet_status, requests=requests))
    mount_mcp(app, pipeline, settings=settings, config=config, fleet_status=fleet_status,
              self_tune_status=self_tune_status, requests=requests)
    mount_dashboard(app, pipeline, fleet_status, config=config,
                    self_tune_status=self_tune_status, requests=requests)
    mount_docs(app)
    _install_error_handlers(app)
    # Served ahead of the framework's layers, behind the same middleware as every route.
    app.hot_routes = {("POST", "/v1/messages"): anthropic_api.messages}
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if settings is not None and settings.admin_token is not None:
        app.add_middleware(
            TokenAuth,
            token=settings.api_key.reveal() if settings.api_key is not None else None,
            admin_token=settings.admin_token.reveal(),
        )
    # Outermost but for the counting, so a page on another site learns nothing, not even
    # whether a token is needed.
    app.add_middleware(OriginGuard, allowed_hosts=settings.allowed_hosts if settings else ())
    # Outside even the guard: a request it refuses is counted too.
    app.add_middleware(CountRequests, counts=requests)
    return app


_HTTP_ERROR_TYPES = {  # status → (our kind, Anthropic's error type)
    404: ("not_found", "not_found_error"),
    405: ("method_not_allowed", "invalid_request_error"),
    413: ("request_too_large", "request_too_large"),
}


def _install_error_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc), dialect_of(request.url.path))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind, anthropic_type = _HTTP_ERROR_TYPES.get(
            exc.status_code, ("http_error", "invalid_request_error")
        )
        error = ApiError(
            status=exc.status_code,
            kind=kind,
            message=str(exc.detail),
            field="body" if exc.status_code == 413 else None,
            anthropic_type=anthropic_type,
        )
        response = error_response(error, dialect_of(request.url.path))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 413:
            response.headers["connection"] = "close"  # the rest of the body is not read
        return response

    async def on_refusal(request: Request, exc: Exception) -> Response:
        # The pipeline's own refusals (overload, budget, deadline, provider down) and requests
        # the library rejected as malformed: expected outcomes, answered without a traceback.
        # Any other exception (a plain ValueError included) is a bug: `on_unexpected`.
        return error_response(from_exception(exc), dialect_of(request.url.path))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return error_response(from_exception(exc), dialect_of(request.url.path))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(OrchestratorError, on_refusal)
    app.add_exception_handler(Exception, on_unexpected)
