"""The prompt optimizer opted in over HTTP: the `x-orchestrator-optimize-prompt` header or an
`optimize_prompt` body field, on `/v1/prompt`, `/v1/messages` (the `anthropic` SDK) and
`/v1/chat/completions` (the `openai` SDK), reaches the provider optimized; without either it
reaches it as written. The echo provider answers with the last user turn it received."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from orchestrator.server.runner import ServerThread, build_app
from orchestrator.settings import ServerSettings

CODE = "```python\nx  =  1    # kept as written\n```"
HEADER = "x-orchestrator-optimize-prompt"


def written(n: int) -> str:
    return f"Fix   the    bug   in  step {n}.\n\n\n\n\n{CODE}"


def optimized(n: int) -> str:
    return f"Fix the bug in step {n}.\n\n{CODE}"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app, _ = build_app(ServerSettings(provider="echo", semantic_dedup=False))
    with ServerThread(app) as served:
        yield served


def prompt(url: str, text: str, headers: dict[str, str] | None = None, **body: object) -> str:
    answer = httpx.post(url + "/v1/prompt", json={"input": text, **body}, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["text"])


def test_v1_prompt_opts_in_by_header(url: str) -> None:
    assert prompt(url, written(1), {HEADER: "1"}) == optimized(1)
    assert prompt(url, written(2)) == written(2)  # no opt-in: as written
    assert prompt(url, written(3), {HEADER: "off"}) == written(3)


def test_v1_prompt_opts_in_by_body_field_which_wins_over_the_header(url: str) -> None:
    assert prompt(url, written(4), optimize_prompt=True) == optimized(4)
    assert prompt(url, written(5), {HEADER: "1"}, optimize_prompt=False) == written(5)


def test_a_field_that_is_not_a_boolean_is_refused_naming_it(url: str) -> None:
    answer = httpx.post(url + "/v1/messages", json={
        "model": "echo", "max_tokens": 64, "optimize_prompt": "yes",
        "messages": [{"role": "user", "content": written(6)}]})
    assert answer.status_code == 400
    assert "optimize_prompt" in answer.text


def test_the_anthropic_door_opts_in_by_header_or_field(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)

    def ask(n: int, **kw: object) -> str:
        message = client.messages.create(model="echo", max_tokens=256, messages=[
            {"role": "user", "content": written(n)}], **kw)  # type: ignore[call-overload]
        return str(message.content[0].text)

    assert ask(7, extra_headers={HEADER: "1"}) == optimized(7)
    assert ask(8, extra_body={"optimize_prompt": True}) == optimized(8)
    assert ask(9) == written(9)


def test_the_openai_door_opts_in_by_header_or_field(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    def ask(n: int, **kw: object) -> str:
        completion = client.chat.completions.create(model="echo", messages=[
            {"role": "user", "content": written(n)}], **kw)  # type: ignore[call-overload]
        return str(completion.choices[0].message.content)

    assert ask(10, extra_headers={HEADER: "true"}) == optimized(10)
    assert ask(11, extra_body={"optimize_prompt": True}) == optimized(11)
    assert ask(12) == written(12)
