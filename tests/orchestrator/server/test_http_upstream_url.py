"""Upstreams come only from settings: the SDKs' own env variables are ignored, and a request
that loops back into the server is refused at once."""

from __future__ import annotations

import time

import httpx
import pytest
from served import free_port

from orchestrator import AnthropicWorker, OpenAIWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerThread, create_app


def test_workers_ignore_the_sdks_base_url_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ANTHROPIC_BASE_URL / OPENAI_BASE_URL set in the server's environment, workers
    without a base URL still talk to the providers themselves."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/steal")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/steal")
    anthropic_worker = AnthropicWorker("sk-ant-test-key-000")
    openai_worker = OpenAIWorker("sk-test-key-000")
    assert anthropic_worker.base_url.startswith("https://api.anthropic.com")
    assert str(openai_worker._client.base_url).startswith("https://api.openai.com/v1")


def test_a_request_looping_back_into_the_server_is_refused_at_once() -> None:
    """An upstream URL pointing at the server itself: the looped request gets 508 and the
    client an error within seconds, not after its deadline."""
    port = free_port()
    worker = AnthropicWorker("sk-ant-loop-key-000", base_url=f"http://127.0.0.1:{port}")
    app = create_app(Pipeline(PipelineConfig(), worker))
    with ServerThread(app, port=port) as url:
        started = time.monotonic()
        answer = httpx.post(url + "/v1/prompt", json={"input": "hi", "timeout_s": 60}, timeout=60)
        elapsed = time.monotonic() - started
    assert answer.status_code == 502
    assert elapsed < 20
