"""The web dashboard: one static page at `GET /dashboard`, fed live over server-sent events.

    mount_dashboard(app, pipeline, fleet_status=fleet.counts)

`GET /dashboard/events` sends a `status` event every `interval_s` seconds whose data is the
JSON `GET /v1/status` returns: the pipeline snapshot's fields and, when a fleet is attached,
its task counts under `"fleet"`. The first event of each stream also carries the pipeline's
throughput history (`Pipeline.throughput_history()`, what `GET /v1/status/history` answers)
under `"throughput_history"`, so a page opened late draws the last fifteen minutes at once.
The page (`dashboard.html`, package data next to this module: plain HTML/CSS/JS, no build
step, nothing fetched from elsewhere) draws every panel from those events alone, its chart
from that history followed by the throughput of each event since.

An ASGI app is not told when the server starts shutting down, and uvicorn waits for open
responses (then cancels them, logging an error, after its graceful-shutdown timeout: 5 s in
`runner`). So each event stream ends by itself after at most `stream_s` seconds with an `end`
event, on which the page opens a new stream at once: an open page delays a shutdown by less
than `stream_s`, and never gets its stream cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

from fastapi import FastAPI
from starlette.responses import HTMLResponse, RedirectResponse, StreamingResponse

from orchestrator.config import LiveConfigSet
from orchestrator.pipeline import Pipeline
from orchestrator.server.request_counts import RequestCounts
from orchestrator.server.status import FleetStatus, SelfTuneStatus, status_payload

__all__ = ["mount_dashboard"]

log = logging.getLogger(__name__)

_PAGE = "dashboard.html"
_RECONNECT_MS = 1000


def mount_dashboard(
    app: FastAPI,
    pipeline: Pipeline,
    fleet_status: FleetStatus | None = None,
    *,
    config: LiveConfigSet | None = None,
    self_tune_status: SelfTuneStatus | None = None,
    requests: RequestCounts | None = None,
    interval_s: float = 1.0,
    stream_s: float = 4.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Serve the dashboard page and its event stream on `app`.

    `config` is the live configuration the status shows (default: the pipeline's), `requests`
    the server's request counts it shows.
    `interval_s` is the time between two events, `stream_s` how long one event stream lasts
    at most (keep it below the server's graceful-shutdown timeout); `sleep` waits between
    events. Neither route is in the OpenAPI schema. Raises ValueError for a non-positive
    `interval_s` or `stream_s`, and FileNotFoundError if the page is missing from the
    installed package.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    if stream_s <= 0:
        raise ValueError(f"stream_s must be > 0, got {stream_s!r}")
    page = resources.files(__package__).joinpath(_PAGE).read_text(encoding="utf-8")
    events_per_stream = max(1, round(stream_s / interval_s))

    async def events() -> AsyncIterator[str]:
        yield f"retry: {_RECONNECT_MS}\n\n"
        for n in range(events_per_stream):
            if n:
                await sleep(interval_s)
            status = status_payload(pipeline, fleet_status, config, self_tune_status,
                                    requests=requests)
            if not n:  # each stream starts with the history the chart draws at once
                status["throughput_history"] = pipeline.throughput_history()
            data = json.dumps(status, separators=(",", ":"))
            yield f"event: status\ndata: {data}\n\n"
        yield "event: end\ndata: {}\n\n"

    @app.get("/dashboard", include_in_schema=False)
    @app.get("/dashboard/", include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        # Relative, and without the query: never echo the Host or a token into a Location.
        return RedirectResponse("/dashboard", status_code=307)

    @app.get("/dashboard/events", include_in_schema=False)
    async def dashboard_events() -> StreamingResponse:
        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
