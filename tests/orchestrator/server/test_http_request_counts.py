"""Requests counted by route and status: refused ones too, with labels no client can multiply."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from conftest import echo_pipeline
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from orchestrator import EchoWorker
from orchestrator.errors import ProviderError
from orchestrator.request import Completion, InferenceRequest
from orchestrator.server.body_limit import PROMPT_BODY_BYTES
from orchestrator.server.request_counts import OTHER_ROUTE, RequestCounts
from orchestrator.settings import ServerSettings

TOKEN = "tok-count-me-4b1d"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def http_counts(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, str], float]:
    """{(route, status): count} from one scrape of `/metrics`."""
    response = httpx.get(url + "/metrics", headers=headers)
    assert response.status_code == 200
    counts = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == "orchestrator_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["route"], sample.labels["status"])] = sample.value
    return counts


def test_refused_requests_are_counted_by_route_and_status(
    start_server: Callable[..., str],
) -> None:
    """400, 401, 413, 415, 421 and 403 answers are each counted under their route."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    prompt = url + "/v1/prompt"
    assert httpx.post(prompt, json={"input": "hi"}).status_code == 401
    assert httpx.post(prompt, json={"input": "hi"}, headers=AUTH).status_code == 200
    malformed = httpx.post(prompt, content=b'{"input": ', headers=AUTH | {
        "content-type": "application/json"})
    assert malformed.status_code == 400
    plain = httpx.post(prompt, content=b"hi", headers=AUTH | {"content-type": "text/plain"})
    assert plain.status_code == 415
    big = httpx.post(prompt, content=b"x" * (PROMPT_BODY_BYTES + 1), headers=AUTH | {
        "content-type": "application/json"})
    assert big.status_code == 413
    assert httpx.get(url + "/v1/status", headers=AUTH | {"host": "evil.example"}).status_code \
        == 421
    cross = httpx.post(prompt, json={"input": "hi"}, headers=AUTH | {
        "origin": "http://evil.example"})
    assert cross.status_code == 403

    counts = http_counts(url, AUTH)
    for status in ("401", "200", "400", "415", "413", "403"):
        assert counts[("/v1/prompt", status)] == 1, status
    assert counts[("/v1/status", "421")] == 1


class RateLimited(EchoWorker):
    """A provider that answers every call with 429."""

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        raise ProviderError(self.name, "slow down", status=429, retryable=False)


def test_a_rate_limited_answer_is_counted(start_server: Callable[..., str]) -> None:
    """An upstream 429 passed on to the client counts as a 429 of its route."""
    url = start_server(echo_pipeline(RateLimited()))
    assert httpx.post(url + "/v1/prompt", json={"input": "hi"}).status_code == 429
    assert http_counts(url)[("/v1/prompt", "429")] == 1


def test_unknown_paths_share_one_label(start_server: Callable[..., str]) -> None:
    """Two hundred different unknown paths add one series, `other`, not two hundred."""
    url = start_server()
    with httpx.Client(base_url=url) as client:
        for i in range(200):
            assert client.get(f"/probe/{i}/x{i}").status_code == 404
    counts = http_counts(url)
    assert counts[(OTHER_ROUTE, "404")] == 200
    assert all(route == OTHER_ROUTE or not route.startswith("/probe") for route, _ in counts)


def test_a_wrong_method_counts_under_the_route(start_server: Callable[..., str]) -> None:
    """`GET /v1/prompt` is a 405 of the route `/v1/prompt`, not an unknown path."""
    url = start_server()
    assert httpx.get(url + "/v1/prompt").status_code == 405
    assert http_counts(url)[("/v1/prompt", "405")] == 1


def test_websockets_are_counted_accepted_or_refused(start_server: Callable[..., str]) -> None:
    """An accepted WebSocket counts as 101; one from a foreign Origin as 403."""
    url = start_server()
    ws_url = url.replace("http://", "ws://") + "/v1/stream"
    with connect(ws_url) as ws:
        ws.send('{"input": "hi"}')
        ws.recv()
    with pytest.raises(InvalidStatus):
        connect(ws_url, origin="http://evil.example")  # type: ignore[arg-type]
    counts = http_counts(url)
    assert counts[("/v1/stream", "101")] == 1
    assert counts[("/v1/stream", "403")] == 1


def test_the_status_shows_the_counts(start_server: Callable[..., str]) -> None:
    """`/v1/status` carries the same counts under `http_requests`, the status call included."""
    url = start_server()
    httpx.get(url + "/nowhere")
    httpx.post(url + "/v1/prompt", json={"input": "hi"})
    status = httpx.get(url + "/v1/status").json()["http_requests"]
    assert status["by_route"][OTHER_ROUTE] == {"404": 1}
    assert status["by_route"]["/v1/prompt"] == {"200": 1}
    assert status["total"] == 2  # the status request itself is counted once it is answered


def test_route_labels_are_templates() -> None:
    """A route with parameters is labelled with its template; a mount with its path."""
    from starlette.routing import Mount, Route

    async def endpoint(_: object) -> None:
        return None

    counts = RequestCounts([
        Route("/v1/models/{model}", endpoint),
        Mount("/static", routes=[]),
        Route("/health", endpoint),
    ])
    assert counts.route_of("/v1/models/claude-x") == "/v1/models/{model}"
    assert counts.route_of("/static/a/b.css") == "/static"
    assert counts.route_of("/health") == "/health"
    assert counts.route_of("/health/x") == OTHER_ROUTE
