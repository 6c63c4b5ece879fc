"""Auth, binding and secrets: the bearer token, the loopback rule, keys never in logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest
from conftest import echo_pipeline
from fakes import Fail, FakeAnthropic
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from orchestrator import AnthropicWorker, Pipeline, PipelineConfig
from orchestrator.errors import SettingsError
from orchestrator.server import ServerTask, ServerThread, create_app
from orchestrator.settings import ServerSettings

TOKEN = "tok-never-print-7f3a"


def test_without_a_token_everything_is_open(start_server: Callable[..., str]) -> None:
    """With no API_KEY configured, requests need no credentials."""
    url = start_server(settings=ServerSettings(provider="echo"))
    assert httpx.post(url + "/v1/prompt", json={"input": "hi"}).status_code == 200


def test_with_a_token_requests_must_carry_it(start_server: Callable[..., str]) -> None:
    """With API_KEY set: no or a wrong token is 401; Bearer or x-api-key passes."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    body = {"input": "hi"}
    assert httpx.post(url + "/v1/prompt", json=body).status_code == 401
    wrong = httpx.post(url + "/v1/prompt", json=body, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "unauthorized"
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url + "/v1/prompt", json=body, headers=bearer).status_code == 200
    api_key = {"x-api-key": TOKEN}
    assert httpx.post(url + "/v1/prompt", json=body, headers=api_key).status_code == 200
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/health").status_code == 200  # liveness probes need no token


def test_the_dashboard_takes_the_token_in_its_url(start_server: Callable[..., str]) -> None:
    """A browser can open the dashboard and its event stream with ?token=; nothing else can."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    assert httpx.get(url + "/dashboard").status_code == 401
    assert httpx.get(url + "/dashboard?token=nope").status_code == 401
    assert httpx.get(url + f"/dashboard?token={TOKEN}").status_code == 200
    with httpx.stream("GET", url + f"/dashboard/events?token={TOKEN}") as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
    assert httpx.get(url + f"/v1/status?token={TOKEN}").status_code == 401


def test_sdks_authenticate_with_the_token_as_their_api_key(
    start_server: Callable[..., str],
) -> None:
    """Both SDKs pass by setting their API key to the server's token, and fail without it."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    messages = [{"role": "user", "content": "hi"}]
    good = anthropic.Anthropic(base_url=url, api_key=TOKEN, max_retries=0)
    assert good.messages.create(model="echo", max_tokens=8, messages=messages).content
    bad = anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="echo", max_tokens=8, messages=messages)
    oai = openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0)
    assert oai.chat.completions.create(model="echo", messages=messages).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_websocket_needs_the_token_too(start_server: Callable[..., str]) -> None:
    """A WebSocket without the token is refused; with it, it is answered."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    ws_url = url.replace("http", "ws", 1) + "/v1/stream"
    with pytest.raises(InvalidStatus):
        connect(ws_url, open_timeout=5).close()
    with connect(ws_url, additional_headers={"authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(json.dumps({"input": "hi"}))
        assert json.loads(ws.recv(timeout=5))["text"] == "hi"


@pytest.mark.parametrize("path", ["/v1/stream", "/v1/responses"])
def test_a_websocket_without_the_token_is_answered_401_like_http(
    start_server: Callable[..., str], path: str
) -> None:
    """A refused upgrade gets the HTTP door's answer: 401, the same JSON error body (in the
    path's dialect) and `WWW-Authenticate: Bearer`; a wrong token too. A foreign Origin stays
    a 403, token or not."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    ws_url = url.replace("http", "ws", 1) + path
    http = httpx.get(url + path)
    assert http.status_code == 401
    for headers in ({}, {"authorization": "Bearer nope"}):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url, open_timeout=5, additional_headers=headers).close()
        answer = refused.value.response
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.headers["content-type"].startswith("application/json")
        assert json.loads(answer.body) == http.json()
    for headers in ({}, {"authorization": f"Bearer {TOKEN}"}):
        with pytest.raises(InvalidStatus) as refused:
            connect(
                ws_url,
                open_timeout=5,
                origin="http://evil.example",  # type: ignore[arg-type]
                additional_headers=headers,
            ).close()
        assert refused.value.response.status_code == 403


def test_a_non_loopback_host_without_a_token_is_refused() -> None:
    """Binding beyond loopback without API_KEY fails at start-up, naming what to set."""
    with pytest.raises(SettingsError) as caught:
        ServerSettings(provider="echo", host="0.0.0.0")
    assert "API_KEY" in str(caught.value) and caught.value.names == ("HOST", "API_KEY")
    with pytest.raises(SettingsError):
        ServerThread(create_app(echo_pipeline()), host="0.0.0.0")


def test_a_non_loopback_host_with_a_token_is_allowed() -> None:
    """With a token, a non-loopback bind starts (and still demands the token)."""
    settings = ServerSettings(provider="echo", host="0.0.0.0", port=0, api_key=TOKEN)
    with ServerThread(create_app(echo_pipeline(), settings=settings), host="0.0.0.0") as url:
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(local + "/v1/status").status_code == 401


def test_settings_never_print_their_keys() -> None:
    """repr and str of settings mask every key."""
    settings = ServerSettings(
        provider="anthropic", anthropic_api_key="sk-ant-hidden-1", api_key=TOKEN
    )
    for text in (repr(settings), str(settings), repr(settings.anthropic_api_key)):
        assert "sk-ant-hidden-1" not in text and TOKEN not in text
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.reveal() == "sk-ant-hidden-1"


async def test_keys_never_appear_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Through auth failures, upstream auth failures and successes, no key is logged."""
    upstream_key = "sk-ant-upstream-secret-91"
    caplog.set_level(logging.DEBUG)
    async with FakeAnthropic(reply="fine") as upstream:
        settings = ServerSettings(
            provider="anthropic", anthropic_api_key=upstream_key, api_key=TOKEN
        )
        worker = AnthropicWorker(upstream_key, base_url=upstream.url)
        app = create_app(Pipeline(PipelineConfig(), worker), settings=settings)
        async with ServerTask(app, access_log=True) as url, httpx.AsyncClient() as http:
            bad = {"x-api-key": "bad"}
            await http.post(url + "/v1/prompt", json={"input": "x"}, headers=bad)
            ok = {"authorization": f"Bearer {TOKEN}"}
            answered = await http.post(url + "/v1/prompt", json={"input": "a"}, headers=ok)
            assert answered.is_success
            upstream.fail_next(Fail(status=401, message="invalid x-api-key"))
            refused = await http.post(url + "/v1/prompt", json={"input": "b"}, headers=ok)
            assert refused.status_code == 502
            assert upstream_key not in refused.text
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert caplog.records, "the server logged nothing: the test would prove nothing"
    assert upstream_key not in logged and TOKEN not in logged


def test_the_throughput_history_is_behind_the_token_like_the_status(
    start_server: Callable[..., str],
) -> None:
    """`GET /v1/status/history` needs the token /v1/status needs, and holds the traffic the
    server answered, bucket by bucket."""
    url = start_server(settings=ServerSettings(provider="echo", api_key=TOKEN))
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(url + "/v1/status/history").status_code == 401
    assert httpx.get(url + f"/v1/status/history?token={TOKEN}").status_code == 401
    assert httpx.post(url + "/v1/prompt", json={"input": "hi"}, headers=bearer).status_code == 200
    history = httpx.get(url + "/v1/status/history", headers=bearer)
    assert history.status_code == 200
    body = history.json()
    assert body["bucket_s"] == 5.0 and body["horizon_s"] == 900.0
    assert isinstance(body["points"], list)
