"""Our own API: /v1/prompt (JSON and SSE), WS /v1/stream, feedback, health and status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import FailsMidStream, echo_pipeline
from websockets.sync.client import connect

from orchestrator.server import ServerThread, create_app
from orchestrator.settings import ServerSettings


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs parsed from a streamed text/event-stream response."""
    events, name = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = "message"
    return events


def test_prompt_answers_with_the_documented_fields(start_server: Callable[..., str]) -> None:
    """POST /v1/prompt returns the text with request id, provider, usage, cost and flags."""
    url = start_server()
    response = httpx.post(url + "/v1/prompt", json={"input": "hello pipeline"})
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "hello pipeline"
    assert body["request_id"].startswith("req_")
    assert body["provider"] == "echo" and body["model"] == "echo"
    assert body["usage"]["output_tokens"] > 0
    assert body["deduped"] is False and body["cached"] is False
    assert body["cost_usd"] == 0.0 and body["latency_ms"] >= 0


def test_prompt_stream_sends_server_sent_chunks(start_server: Callable[..., str]) -> None:
    """With "stream": true the answer arrives as SSE chunk events, then a done event."""
    url = start_server()
    with httpx.stream(
        "POST", url + "/v1/prompt", json={"input": "one two three", "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    chunks = [data for name, data in events if name == "chunk"]
    assert [c["text"] for c in chunks] == ["one ", "two ", "three"]
    assert [c["index"] for c in chunks] == [0, 1, 2]
    assert chunks[-1]["finish_reason"] == "stop" and chunks[-1]["usage"]["output_tokens"] > 0
    assert events[-1] == ("done", {"request_id": chunks[0]["request_id"]})


def test_websocket_streams_chunks_for_input_or_prompt(start_server: Callable[..., str]) -> None:
    """WS /v1/stream answers {"input"} and {"prompt"} with chunks as they are produced."""
    url = start_server()
    with connect(url.replace("http", "ws", 1) + "/v1/stream") as ws:
        for key in ("input", "prompt"):
            ws.send(json.dumps({key: f"{key} beta"}))
            first, last = json.loads(ws.recv(timeout=5)), json.loads(ws.recv(timeout=5))
            assert (first["text"], first["index"], first["finish_reason"]) == (f"{key} ", 0, None)
            assert (last["text"], last["index"], last["finish_reason"]) == ("beta", 1, "stop")


def test_a_repeated_stream_says_on_its_first_chunk_that_it_came_from_the_cache(
    start_server: Callable[..., str],
) -> None:
    """Asked again, SSE and WebSocket alike: the first chunk carries `cache_kind` "exact"
    (the SSE response its header too); a first answer's chunks carry none."""
    url = start_server()
    body = {"input": "say it again", "stream": True}
    with httpx.stream("POST", url + "/v1/prompt", json=body) as response:
        first = [d for name, d in sse_events(response) if name == "chunk"]
    with httpx.stream("POST", url + "/v1/prompt", json=body) as response:
        assert response.headers["x-orchestrator-cache"] == "exact"
        again = [d for name, d in sse_events(response) if name == "chunk"]
    assert all("cache_kind" not in c for c in first)
    assert again[0]["cache_kind"] == "exact" and again[0]["similarity"] is None
    with connect(url.replace("http", "ws", 1) + "/v1/stream") as ws:
        ws.send(json.dumps({"input": "say it again"}))
        assert json.loads(ws.recv(timeout=5))["cache_kind"] == "exact"


def test_websocket_reports_a_bad_message_and_stays_open(start_server: Callable[..., str]) -> None:
    """A malformed WS message gets an error naming the field; the next one is answered."""
    url = start_server()
    with connect(url.replace("http", "ws", 1) + "/v1/stream") as ws:
        ws.send(json.dumps({"input": "x", "max_tokens": 0}))
        assert json.loads(ws.recv(timeout=5))["error"]["field"] == "max_tokens"
        ws.send("not json")
        assert json.loads(ws.recv(timeout=5))["error"]["field"] == "body"
        ws.send(json.dumps({"input": "ok"}))
        assert json.loads(ws.recv(timeout=5))["text"] == "ok"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "input"),
        ({"input": ""}, "input"),
        ({"input": "x", "priority": "urgent"}, "priority"),
        ({"input": "x", "max_tokens": -1}, "max_tokens"),
        ({"input": "x", "temperature": "hot"}, "temperature"),
        ({"input": "x", "surprise": 1}, "surprise"),
    ],
)
def test_a_bad_prompt_is_a_400_naming_the_field(
    start_server: Callable[..., str], body: dict[str, Any], field: str
) -> None:
    """Each invalid field is refused with 400 and named."""
    url = start_server()
    response = httpx.post(url + "/v1/prompt", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_a_non_json_body_is_a_400(start_server: Callable[..., str]) -> None:
    """A body that is not JSON is a 400, not a 500."""
    url = start_server()
    response = httpx.post(
        url + "/v1/prompt", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "error" in response.json()


def test_an_oversized_body_is_refused_with_413(start_server: Callable[..., str]) -> None:
    """Bodies over the limit get 413, whether declared by length or sent chunked."""
    url = start_server(settings=ServerSettings(provider="echo", max_body_bytes=1024))
    big = json.dumps({"input": "x" * 4096}).encode()
    declared = httpx.post(url + "/v1/prompt", content=big)
    chunked = httpx.post(url + "/v1/prompt", content=iter([big[:1000], big[1000:]]))
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
    assert httpx.post(url + "/v1/prompt", json={"input": "small"}).status_code == 200


def test_unknown_paths_are_json_404s(start_server: Callable[..., str]) -> None:
    """An unknown path answers a JSON 404."""
    url = start_server()
    response = httpx.get(url + "/v2/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_feedback_is_stored_and_counted(start_server: Callable[..., str]) -> None:
    """POST /v1/feedback is accepted and counted in /v1/status and /metrics."""
    url = start_server()
    request_id = httpx.post(url + "/v1/prompt", json={"input": "rate me"}).json()["request_id"]
    response = httpx.post(url + "/v1/feedback", json={"request_id": request_id, "score": 1})
    assert response.status_code == 202
    bad = httpx.post(url + "/v1/feedback", json={"request_id": request_id, "score": 5})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "score"
    assert httpx.get(url + "/v1/status").json()["feedback_total"] == 1
    assert "orchestrator_feedback_total 1.0" in httpx.get(url + "/metrics").text


def test_status_is_the_snapshot_plus_the_fleet(start_server: Callable[..., str]) -> None:
    """GET /v1/status shows the pipeline snapshot and, when attached, the fleet's counts."""
    url = start_server(fleet_status=lambda: {"pending": 3, "running": 1, "done": 7})
    httpx.post(url + "/v1/prompt", json={"input": "count me"})
    status = httpx.get(url + "/v1/status").json()
    assert status["requests_total"] == 1 and status["completed_total"] == 1
    assert [s["name"] for s in status["stages"]] == [
        "rag",
        "assemble",
        "inference",
        "postprocess",
        "stream",
    ]
    assert status["fleet"] == {"pending": 3, "running": 1, "done": 7}


def test_a_failing_fleet_hook_does_not_break_status(start_server: Callable[..., str]) -> None:
    """If the fleet status callable fails, /v1/status still answers, saying so."""

    def broken() -> dict[str, int]:
        raise OSError("coordinator gone")

    url = start_server(fleet_status=broken)
    status = httpx.get(url + "/v1/status")
    assert status.status_code == 200 and "error" in status.json()["fleet"]


def test_health_and_openapi_are_served(start_server: Callable[..., str]) -> None:
    """GET /health is ok; /openapi.json documents every route."""
    url = start_server()
    assert httpx.get(url + "/health").json()["status"] == "ok"
    paths = httpx.get(url + "/openapi.json").json()["paths"]
    for path in ("/v1/prompt", "/v1/messages", "/v1/chat/completions", "/v1/models", "/metrics"):
        assert path in paths


def test_a_server_that_cannot_bind_says_so(start_server: Callable[..., str]) -> None:
    """Starting a second server on a port in use raises instead of hanging."""
    url = start_server()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError, match="did not start"):
        ServerThread(create_app(echo_pipeline()), port=port).start()


class _BuggyWorker(FailsMidStream):
    """A worker with a bug: it raises a plain ValueError carrying internal details."""

    name = "buggy"

    async def complete(self, request: Any, *, timeout_s: float) -> Any:
        raise ValueError("internal detail: cursor at 0x7f3a in /srv/secret/path")


def test_a_worker_bug_shows_no_internals_and_is_logged(
    start_server: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """An exception a worker raises that is not a ProviderError is a bug, not an upstream answer:
    the client gets a generic error naming the request id, the traceback goes to the log; a
    malformed request is still a 400 naming its field."""
    url = start_server(echo_pipeline(_BuggyWorker()))
    with caplog.at_level("ERROR"):
        response = httpx.post(url + "/v1/prompt", json={"input": "hello"})
    assert response.status_code >= 500, response.text
    assert "secret" not in response.text and "0x7f3a" not in response.text
    assert "req_" in response.text  # the id to find the details by
    assert any("ValueError" in (r.exc_text or "") + r.getMessage() for r in caplog.records)

    bad = httpx.post(url + "/v1/prompt", json={"input": "hello", "max_tokens": 0})
    assert bad.status_code in (400, 422) and "max_tokens" in bad.text


def test_a_plain_value_error_in_a_route_is_a_500_not_a_400() -> None:
    """Only the request-error types are the client's fault; a stray ValueError is an internal
    bug: 500 with a generic message, never its text (which may name internals)."""
    app = create_app(echo_pipeline())

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("internal detail: /srv/secret/path")

    server = ServerThread(app)
    url = server.start()
    try:
        response = httpx.get(url + "/boom")
    finally:
        server.stop()
    assert response.status_code == 500
    assert "secret" not in response.text
