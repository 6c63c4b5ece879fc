"""Usage by model and by client, through real HTTP: `/v1/status`, `/metrics`, and never a token;
and the opt-in prompt log (`LOG_PROMPTS`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest
from conftest import PricedEcho, echo_pipeline
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Pipeline, PipelineConfig
from orchestrator.logging_setup import PROMPT_LOGGER
from orchestrator.request import InferenceRequest, Usage
from orchestrator.settings import ServerSettings

TOKEN = "tok-usage-client-7f3a9c1e5b"
ADMIN = "tok-usage-admin-2d8e4b6f0a"
MODEL = "claude-sonnet-4-5"


class CachingEcho(PricedEcho):
    """The priced echo worker reporting prompt-cache reads and writes, as Anthropic does."""

    def _answer(self, request: InferenceRequest) -> tuple[str, Usage, str]:
        text, usage, finish = super()._answer(request)
        return text, Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                           cache_read_input_tokens=1000, cache_creation_input_tokens=30), finish


def _server(start_server: Callable[..., str], pipeline: Pipeline | None = None) -> str:
    settings = ServerSettings(provider="echo", api_key=TOKEN, admin_api_key=ADMIN)
    return start_server(pipeline or Pipeline(PipelineConfig(), CachingEcho(model=MODEL)),
                        settings=settings)


def _usage(url: str, token: str = TOKEN) -> dict[str, dict]:
    status = httpx.get(url + "/v1/status", headers={"authorization": f"Bearer {token}"})
    assert status.status_code == 200
    rows = status.json()["usage"]["rows"]
    return {f"{row['model']}|{row['client']}": row for row in rows}


def _scrape(url: str) -> tuple[str, dict[str, dict[tuple[tuple[str, str], ...], float]]]:
    text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return text, samples


def test_usage_is_broken_down_by_agent_header_and_by_role(
    start_server: Callable[..., str],
) -> None:
    """An agent naming itself is its own client; a caller that does not is its token's role."""
    url = _server(start_server)
    planner = anthropic.Anthropic(base_url=url, api_key=TOKEN, max_retries=0,
                                  default_headers={"x-orchestrator-agent": "planner"})
    for word in ("alpha", "beta"):
        planner.messages.create(model=MODEL, max_tokens=64,
                                messages=[{"role": "user", "content": word}])
    plain = openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0)
    plain.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "gamma"}])
    admin = anthropic.Anthropic(base_url=url, api_key=ADMIN, max_retries=0)
    admin.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "d"}])

    rows = _usage(url)
    assert set(rows) == {f"{MODEL}|planner", f"{MODEL}|client", f"{MODEL}|admin"}
    ours = rows[f"{MODEL}|planner"]
    assert ours["requests"] == 2
    assert ours["cache_read_input_tokens"] == 2000
    assert ours["cache_creation_input_tokens"] == 60
    assert ours["input_tokens"] > 0 and ours["output_tokens"] > 0
    assert ours["cost_usd"] > 0
    status = httpx.get(url + "/v1/status", headers={"authorization": f"Bearer {TOKEN}"}).json()
    total = sum(row["cost_usd"] for row in rows.values())
    assert total == pytest.approx(status["cost_usd_total"])
    assert status["usage"]["by_client"]["planner"]["requests"] == 2
    assert status["usage"]["by_model"][MODEL]["requests"] == 4


def test_metrics_carry_usage_by_model_client_and_kind(start_server: Callable[..., str]) -> None:
    """`/metrics` has requests, tokens of every kind and cost, labelled by model and client."""
    url = _server(start_server)
    httpx.post(url + "/v1/prompt", json={"input": "hello there", "model": MODEL},
               headers={"authorization": f"Bearer {TOKEN}", "x-orchestrator-agent": "coder-2"})
    _, samples = _scrape(url)
    pair = (("client", "coder-2"), ("model", MODEL))
    assert samples["orchestrator_usage_requests_total"][pair] == 1
    tokens = samples["orchestrator_usage_tokens_total"]
    assert tokens[(("client", "coder-2"), ("kind", "cache_read"), ("model", MODEL))] == 1000
    assert tokens[(("client", "coder-2"), ("kind", "cache_creation"), ("model", MODEL))] == 30
    assert tokens[(("client", "coder-2"), ("kind", "output"), ("model", MODEL))] > 0
    assert samples["orchestrator_usage_cost_usd_total"][pair] > 0


@pytest.mark.parametrize(
    "header",
    [TOKEN, ADMIN, f"Bearer {TOKEN}", TOKEN.upper(), TOKEN[:12], f"x{TOKEN}y",
     "sk-ant-abcdef0123456789xyz"],
)
def test_a_token_sent_as_the_agent_name_never_becomes_a_label(
    start_server: Callable[..., str], header: str
) -> None:
    """A header carrying a token, part of one, or a key falls back to the role: no token, nor
    any part of it, shows in status, metrics or labels."""
    url = _server(start_server)
    client = anthropic.Anthropic(base_url=url, api_key=TOKEN, max_retries=0,
                                 default_headers={"x-orchestrator-agent": header})
    client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "q"}])
    assert set(_usage(url)) == {f"{MODEL}|client"}
    status = httpx.get(url + "/v1/status", headers={"authorization": f"Bearer {ADMIN}"}).text
    metrics, _ = _scrape(url)
    for text in (status, metrics):
        for secret in (TOKEN, ADMIN):
            assert secret[:12].lower() not in text.lower()


def test_a_server_without_tokens_labels_callers_anonymous(
    start_server: Callable[..., str],
) -> None:
    """Without a token and without the header, the client is `anonymous`."""
    url = start_server(Pipeline(PipelineConfig(), PricedEcho(model=MODEL)),
                       settings=ServerSettings(provider="echo"))
    httpx.post(url + "/v1/prompt", json={"input": "hi", "model": MODEL})
    body = httpx.get(url + "/v1/status").json()
    assert list(body["usage"]["by_client"]) == ["anonymous"]


def test_unsafe_agent_names_are_sanitised(start_server: Callable[..., str]) -> None:
    """An agent name is cut to safe characters and a bounded length."""
    url = _server(start_server)
    httpx.post(url + "/v1/prompt", json={"input": "hi", "model": MODEL},
               headers={"authorization": f"Bearer {TOKEN}",
                        "x-orchestrator-agent": 'a"b} c' + "z" * 200})
    (client,) = {row["client"] for row in _usage(url).values()}
    assert client.startswith("a_b_c") and len(client) == 64


# The test's own clients log their requests at DEBUG; only the server's records count.
_CLIENT_LOGGERS = ("anthropic", "openai", "httpx", "httpcore")


def _records(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.name} {r.getMessage()} {json.dumps(r.__dict__, default=str)}"
        for r in caplog.records if not r.name.startswith(_CLIENT_LOGGERS)
    )


def test_prompts_and_answers_are_not_logged_by_default(
    start_server: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """Off (the default), no prompt or answer text is in any log record, even at DEBUG."""
    url = start_server(echo_pipeline())
    with caplog.at_level(logging.DEBUG):
        for path, body in (("/v1/prompt", {"input": "zebra-canary-prompt"}),
                           ("/v1/prompt", {"input": "zebra-canary-stream", "stream": True})):
            assert httpx.post(url + path, json=body).status_code == 200
        anthropic.Anthropic(base_url=url, api_key="x", max_retries=0).messages.create(
            model="echo", max_tokens=64,
            messages=[{"role": "user", "content": "zebra-canary-messages"}])
    server_lines = _records(caplog)
    assert "zebra-canary" not in server_lines


def test_log_prompts_records_prompt_and_answer_masked_and_truncated(
    start_server: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """On, each answer's prompt and text go to `orchestrator.prompts` at INFO, keys masked,
    long texts cut."""
    url = start_server(echo_pipeline(log_prompts=True))
    key = "sk-ant-" + "q" * 30
    with caplog.at_level(logging.INFO, logger=PROMPT_LOGGER):
        httpx.post(url + "/v1/prompt", json={"input": f"walrus {key} " + "w" * 5000},
                   headers={"x-orchestrator-agent": "tester"})
    lines = [r for r in caplog.records if r.name == PROMPT_LOGGER]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    message = lines[0].getMessage()
    assert "walrus" in message and "client=tester" in message
    assert key not in message and "[REDACTED]" in message
    assert "more chars" in message and len(message) < 5000


def test_an_answer_served_without_a_call_counts_for_the_client_that_got_it(
    start_server: Callable[..., str],
) -> None:
    """The same prompt from a second agent is answered from the response cache: the second
    agent's row counts no upstream request and no cost, but one answer without a call and what
    it saved; the ledger's cost still adds up to the upstream calls'; /metrics says the same."""
    url = _server(start_server)
    for agent in ("planner", "reviewer"):
        client = anthropic.Anthropic(base_url=url, api_key=TOKEN, max_retries=0,
                                     default_headers={"x-orchestrator-agent": agent})
        client.messages.create(model=MODEL, max_tokens=64,
                               messages=[{"role": "user", "content": "the same question"}])
    rows = _usage(url)
    planner, reviewer = rows[f"{MODEL}|planner"], rows[f"{MODEL}|reviewer"]
    assert (planner["requests"], planner["answered_without_call"]) == (1, 0)
    assert (reviewer["requests"], reviewer["answered_without_call"]) == (0, 1)
    assert reviewer["cost_usd"] == 0 and reviewer["input_tokens"] == 0
    assert reviewer["saved_usd"] == pytest.approx(planner["cost_usd"])
    status = httpx.get(url + "/v1/status", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert status["saved_usd"]["total"] == pytest.approx(reviewer["saved_usd"])
    _, samples = _scrape(url)
    pair = (("client", "reviewer"), ("model", MODEL))
    assert samples["orchestrator_usage_answered_without_call_total"][pair] == 1
    assert samples["orchestrator_usage_saved_usd_total"][pair] == pytest.approx(
        reviewer["saved_usd"]
    )
    assert samples["orchestrator_usage_requests_total"][pair] == 0
