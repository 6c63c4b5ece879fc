"""The dashboard's routes without a browser: the page, the event stream, their place in the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fakeclock import FakeClock
from fastapi import FastAPI

from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
from orchestrator.server.dashboard import mount_dashboard
from orchestrator.server.status import status_payload


@pytest.fixture
async def pipeline() -> AsyncIterator[Pipeline]:
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        yield pipeline


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def status_events(body: str) -> list[dict[str, Any]]:
    """The data of each `status` event in an SSE body."""
    events = []
    for block in body.split("\n\n"):
        lines = block.splitlines()
        if "event: status" in lines:
            (data,) = (line.removeprefix("data: ") for line in lines if line.startswith("data: "))
            events.append(json.loads(data))
    return events


async def test_page_is_served_as_html_with_no_outside_resources(pipeline: Pipeline) -> None:
    """GET /dashboard answers the page, which loads nothing from another origin."""
    app = FastAPI()
    mount_dashboard(app, pipeline)
    async with client_for(app) as client:
        response = await client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="throughput-chart"' in response.text
    assert "http://" not in response.text and "https://" not in response.text


async def test_events_carry_real_snapshots_spaced_by_the_interval(pipeline: Pipeline) -> None:
    """Each event holds the snapshot at the time it was sent; the stream sleeps `interval_s`
    between events and, within `stream_s`, ends with an `end` event and nothing after it."""
    slept: list[float] = []

    async def sleep(dt_s: float) -> None:
        slept.append(dt_s)
        await pipeline.infer(InferenceRequest(f"request {len(slept)}"))

    app = FastAPI()
    mount_dashboard(app, pipeline, interval_s=0.5, stream_s=1.5, sleep=sleep)
    async with client_for(app) as client:
        response = await client.get("/dashboard/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: 1000\n\n")
    assert response.text.endswith("event: end\ndata: {}\n\n")
    events = status_events(response.text)
    assert slept == [0.5, 0.5]
    assert [e["requests_total"] for e in events] == [0, 1, 2]
    assert not any("fleet" in e for e in events)


async def test_events_include_the_fleet_when_one_is_attached(pipeline: Pipeline) -> None:
    """With `fleet_status`, each event carries the fleet's counts as it returns them."""
    app = FastAPI()
    counts = {"pending": 3, "running": 1, "done": 8, "failed": 0}
    mount_dashboard(app, pipeline, fleet_status=lambda: counts, stream_s=1.0)
    async with client_for(app) as client:
        response = await client.get("/dashboard/events")
    (event,) = status_events(response.text)
    assert event["fleet"] == counts


def test_status_payload_is_what_v1_status_shows(pipeline: Pipeline) -> None:
    """The payload is the snapshot's own fields plus the feedback count, the live config and
    its version, and the fleet's counts, JSON-ready."""
    payload = status_payload(pipeline, lambda: {"done": 2})
    assert payload.pop("fleet") == {"done": 2}
    assert payload.pop("feedback_total") == 0
    assert payload.pop("live_config")["inference_concurrency"] == 64
    assert payload.pop("live_config_version") == 0
    assert payload.keys() == pipeline.snapshot().to_dict().keys()
    json.dumps(payload)


def test_a_failing_fleet_hook_is_reported_not_raised(pipeline: Pipeline) -> None:
    """If asking the fleet fails, the payload says so under "fleet" and keeps the pipeline's."""

    def broken() -> dict[str, int]:
        raise OSError("tasks folder gone")

    payload = status_payload(pipeline, broken)
    assert payload["fleet"] == {"error": "fleet status unavailable (OSError)"}
    assert payload["requests_total"] == 0


async def test_dashboard_routes_stay_out_of_the_openapi_schema(pipeline: Pipeline) -> None:
    """Neither the page nor the endless event stream is offered to API clients or fuzzers."""
    app = FastAPI()
    mount_dashboard(app, pipeline)
    assert not any(path.startswith("/dashboard") for path in app.openapi()["paths"])


@pytest.mark.parametrize("bad", [{"interval_s": 0}, {"interval_s": -1}, {"stream_s": 0}])
def test_non_positive_timings_are_refused(pipeline: Pipeline, bad: dict[str, float]) -> None:
    """A zero or negative interval or stream length is a ValueError naming the parameter."""
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        mount_dashboard(FastAPI(), pipeline, **bad)


def test_public_names() -> None:
    """The module exports the mount function and the status builder, nothing else."""
    from orchestrator.server import dashboard

    assert sorted(dashboard.__all__) == ["mount_dashboard"]


async def test_each_stream_starts_with_the_throughput_history() -> None:
    """The first event of a stream carries the pipeline's kept history; later events do not
    (the page appends their own throughput)."""
    clock = FakeClock(start=1000.0)
    async with Pipeline(PipelineConfig(), EchoWorker(latency_s=0.0), clock=clock) as pipeline:
        for i in range(3):
            await pipeline.infer(InferenceRequest(f"q {i}"))
        clock.advance(5.0)
        app = FastAPI()
        mount_dashboard(app, pipeline, interval_s=1.0, stream_s=2.0, sleep=clock.sleep)
        async with client_for(app) as client:
            body = (await client.get("/dashboard/events")).text
    first, *rest = status_events(body)
    assert first["throughput_history"]["points"] == [[1005.0, 0.6]]
    assert rest and all("throughput_history" not in event for event in rest)
