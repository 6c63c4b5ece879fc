"""`GET /v1/config` and `PATCH /v1/config` through a real server on a real socket, and MCP's
`configure_pipeline` through the real `mcp` client, both tuning the same `LiveConfigSet`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from coordinator.fleet import FleetTunables
from orchestrator import EchoWorker, LiveConfig, Pipeline, PipelineConfig
from orchestrator.config import LiveConfigSet
from orchestrator.server.app import create_app
from orchestrator.server.runner import ServerTask
from orchestrator.settings import ServerSettings

CLIENT = "client-token-0123456789"
ADMIN = "admin-token-9876543210"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_get_shows_values_bounds_and_version(start_server: Callable[..., str]) -> None:
    """GET /v1/config answers every tunable's value and bounds, and the version."""
    url = start_server()
    body = httpx.get(url + "/v1/config").json()
    assert body["version"] == 0
    assert body["values"]["inference_concurrency"] == 64
    assert body["values"]["rate_limit_rps"] is None
    assert body["bounds"]["inference_concurrency"] == {
        "low": 1,
        "high": 4096,
        "unit": "calls",
        "integer": True,
        "unlimited_ok": False,
    }
    assert body["bounds"]["rate_limit_rps"]["unlimited_ok"] is True
    assert set(body["values"]) == set(body["bounds"])


def test_patch_changes_live_values_and_answers_old_to_new(
    start_server: Callable[..., str],
) -> None:
    """A partial PATCH changes exactly the named values in the running pipeline and answers
    each old -> new (an unchanged value is not listed); the version grows by one."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    url = start_server(pipeline)
    response = httpx.patch(
        url + "/v1/config",
        json={"inference_concurrency": 8, "cache_ttl_s": 30, "retry_max_attempts": 3},
    )
    assert response.status_code == 200
    assert response.json() == {
        "changed": {
            "inference_concurrency": {"old": 64, "new": 8},
            "cache_ttl_s": {"old": 300.0, "new": 30},
        },
        "version": 1,
    }
    assert pipeline.live.current.inference_concurrency == 8
    assert httpx.get(url + "/v1/config").json()["values"]["cache_ttl_s"] == 30
    assert httpx.get(url + "/v1/status").json()["inference_concurrency"] == 8


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"inference_concurrency": 4, "shed_threshold": 2}, "shed_threshold", "[0.05, 1]"),
        ({"rate_limit_rps": 1e-300}, "rate_limit_rps", "[0.1, 1e+09]"),
        ({"retry_base_delay_s": 1e308}, "retry_base_delay_s", "[0, 30]"),
        ({"inference_concurrency": 2.5}, "inference_concurrency", "an integer"),
        ({"inference_concurrency": True}, "inference_concurrency", "an integer"),
        ({"cache_ttl_s": "60"}, "cache_ttl_s", "a finite number"),
        ({"breaker_open_s": None}, "breaker_open_s", "got None"),
        ({"warp_speed": 9}, "warp_speed", "unknown tunable(s): warp_speed"),
        ({}, "body", "no changes given"),
        ([1, 2], "body", "JSON object"),
    ],
)
def test_a_bad_patch_is_422_naming_the_field_and_changes_nothing(
    start_server: Callable[..., str], body: Any, field: str, words: str
) -> None:
    """A change outside the bounds, of the wrong type, or to an unknown name is refused with
    422 naming the field; no value of the request is applied."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    url = start_server(pipeline)
    response = httpx.patch(url + "/v1/config", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert pipeline.live.version == 0
    assert pipeline.live.current.inference_concurrency == 64


def test_malformed_json_is_400_with_its_place(start_server: Callable[..., str]) -> None:
    """A body that is not JSON is a 400 saying where it broke."""
    url = start_server()
    response = httpx.patch(
        url + "/v1/config",
        content=b'{"inference_concurrency": 8,\n oops}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "line 2, column 2" in response.json()["error"]["message"]


def test_with_one_token_it_serves_both_reading_and_changing(
    start_server: Callable[..., str],
) -> None:
    """With API_KEY alone, reading and changing both need it, and it may do both."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=CLIENT))
    assert httpx.get(url + "/v1/config").status_code == 401
    assert httpx.patch(url + "/v1/config", json={"cache_ttl_s": 9}).status_code == 401
    assert httpx.get(url + "/v1/config", headers=bearer(CLIENT)).status_code == 200
    changed = httpx.patch(url + "/v1/config", json={"cache_ttl_s": 9}, headers=bearer(CLIENT))
    assert changed.status_code == 200


@pytest.mark.parametrize("presented", [CLIENT, ADMIN[:-1], ADMIN + "x", ""])
def test_with_an_admin_token_only_it_may_change(
    start_server: Callable[..., str], presented: str
) -> None:
    """With API_KEY and ADMIN_API_KEY, the client token reads the config but a change with it
    (or with a prefix, an extension or nothing) is refused and applies nothing."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    settings = ServerSettings(provider="echo", api_key=CLIENT, admin_api_key=ADMIN)
    url = start_server(pipeline, settings=settings)
    assert httpx.get(url + "/v1/config", headers=bearer(CLIENT)).status_code == 200
    refused = httpx.patch(
        url + "/v1/config", json={"cache_ttl_s": 9}, headers={"x-api-key": presented}
    )
    assert refused.status_code == (403 if presented == CLIENT else 401)
    if presented == CLIENT:
        assert "admin token" in refused.json()["error"]["message"]
    assert pipeline.live.version == 0
    accepted = httpx.patch(url + "/v1/config", json={"cache_ttl_s": 9}, headers=bearer(ADMIN))
    assert accepted.json()["changed"] == {"cache_ttl_s": {"old": 300.0, "new": 9}}
    assert httpx.get(url + "/v1/status", headers=bearer(ADMIN)).status_code == 200


def test_with_only_an_admin_token_reading_is_open_and_changing_is_not(
    start_server: Callable[..., str],
) -> None:
    """With ADMIN_API_KEY alone every route stays open, but a change needs that token."""
    url = start_server(settings=ServerSettings(provider="echo", admin_api_key=ADMIN))
    assert httpx.get(url + "/v1/config").status_code == 200
    assert httpx.post(url + "/v1/prompt", json={"input": "hi"}).status_code == 200
    assert httpx.patch(url + "/v1/config", json={"cache_ttl_s": 9}).status_code == 403
    ok = httpx.patch(url + "/v1/config", json={"cache_ttl_s": 9}, headers=bearer(ADMIN))
    assert ok.status_code == 200


def test_the_fleet_config_is_served_beside_the_pipelines(
    start_server: Callable[..., str],
) -> None:
    """A server given the fleet's live config shows and tunes `agents` and `lease_s` in the
    same name space, in one atomic PATCH with pipeline values."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    fleet = LiveConfig(FleetTunables(agents=2))
    url = start_server(pipeline, config=LiveConfigSet(pipeline.live, fleet))
    values = httpx.get(url + "/v1/config").json()["values"]
    assert values["agents"] == 2 and values["lease_s"] == 60.0
    refused = httpx.patch(url + "/v1/config", json={"agents": 5, "shed_threshold": 7})
    assert refused.status_code == 422 and fleet.current.agents == 2
    response = httpx.patch(url + "/v1/config", json={"agents": 5, "shed_threshold": 0.5})
    assert response.json() == {
        "changed": {"agents": {"old": 2, "new": 5}, "shed_threshold": {"old": 0.9, "new": 0.5}},
        "version": 2,
    }
    assert fleet.current.agents == 5 and pipeline.live.current.shed_threshold == 0.5


async def test_mcp_configure_needs_the_admin_token_and_shares_the_code() -> None:
    """Over /mcp with the client token `configure_pipeline` is refused and changes nothing;
    with the admin token it changes the value GET /v1/config then shows."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    settings = ServerSettings(provider="echo", api_key=CLIENT, admin_api_key=ADMIN)
    async with ServerTask(create_app(pipeline, settings=settings)) as url:
        outcomes = []
        for token in (CLIENT, ADMIN):
            http_client = httpx2.AsyncClient(headers=bearer(token))
            async with (
                http_client,
                Client(streamable_http_client(url + "/mcp", http_client=http_client)) as client,
            ):
                outcomes.append(
                    await client.call_tool(
                        "configure_pipeline", {"changes": {"inference_concurrency": 7}}
                    )
                )
        async with httpx.AsyncClient(headers=bearer(CLIENT)) as plain:
            shown = (await plain.get(url + "/v1/config")).json()
    refused, accepted = outcomes
    assert refused.is_error
    assert "admin token" in " ".join(getattr(b, "text", "") for b in refused.content)
    assert not accepted.is_error
    assert accepted.structured_content == {
        "changed": {"inference_concurrency": {"old": 64, "new": 7}},
        "version": 1,
    }
    assert shown["values"]["inference_concurrency"] == 7 and shown["version"] == 1


def test_a_name_in_two_live_configs_is_refused() -> None:
    """A LiveConfigSet refuses two configs that share a field name."""
    with pytest.raises(ValueError, match="agents"):
        LiveConfigSet(LiveConfig(FleetTunables()), LiveConfig(FleetTunables()))
