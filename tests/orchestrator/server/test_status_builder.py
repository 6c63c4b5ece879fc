"""One status builder: `GET /v1/status`, the dashboard's event stream and MCP's
`pipeline_status` show the same data (snapshot, feedback, live config, fleet)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from mcp import Client

from orchestrator import EchoWorker, Pipeline, PipelineConfig
from orchestrator.server.app import create_app
from orchestrator.server.runner import ServerTask

FLEET = {"pending": 2, "running": 1, "done": 4}


async def _dashboard_event(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    async with client.stream("GET", url + "/dashboard/events") as response:
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "status":
                data: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return data
    raise AssertionError("no status event")


async def test_every_door_shows_the_same_status() -> None:
    """After one answer, one feedback and one config change, the three doors carry the same
    keys and the same feedback count, live config, version and fleet status."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    app = create_app(pipeline, fleet_status=lambda: FLEET)
    async with ServerTask(app) as url, httpx.AsyncClient(timeout=30) as client:
        answer = (await client.post(url + "/v1/prompt", json={"input": "hi"})).json()
        await client.post(
            url + "/v1/feedback", json={"request_id": answer["request_id"], "score": 1}
        )
        await client.patch(url + "/v1/config", json={"cache_ttl_s": 42})
        http = (await client.get(url + "/v1/status")).json()
        dashboard = await _dashboard_event(client, url)
        async with Client(url + "/mcp") as mcp:
            result = await mcp.call_tool("pipeline_status", {})
    assert not result.is_error and result.structured_content is not None
    tool = dict(result.structured_content)
    # The dashboard's first event of a stream adds the throughput history its chart draws.
    assert set(http) == set(dashboard) - {"throughput_history"} == set(tool)
    assert isinstance(dashboard["throughput_history"]["points"], list)
    for status in (http, dashboard, tool):
        assert status["feedback_total"] == 1
        assert status["live_config"]["cache_ttl_s"] == 42
        assert status["live_config_version"] == 1
        assert status["fleet"] == FLEET
        assert status["completed_total"] == 1
