"""The prompt optimizer opted in over HTTP: the `x-orchestrator-optimize-prompt` header or an
`optimize_prompt` body field, on `/v1/prompt`, `/v1/messages` (the `anthropic` SDK) and
`/v1/chat/completions`, `/v1/completions` and `/v1/responses` (HTTP and its WebSocket mode,
where the header comes with the upgrade; the `openai` SDK), reaches the provider optimized, and
the optimizer counts the tokens it saved; without either it reaches it as written. The echo
provider answers with the last user turn it received."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from intelligence.optimize import PromptRewriter
from orchestrator.server.responses_api import to_request
from orchestrator.server.runner import ServerThread, build_app
from orchestrator.settings import ServerSettings

CODE = "```python\nx  =  1    # kept as written\n```"
HEADER = "x-orchestrator-optimize-prompt"


def written(n: int) -> str:
    return f"Fix   the    bug   in  step {n}.\n\n\n\n\n{CODE}"


def optimized(n: int) -> str:
    return f"Fix the bug in step {n}.\n\n{CODE}"


_REWRITERS: list[PromptRewriter] = []


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app, _ = build_app(ServerSettings(provider="echo", semantic_dedup=False))
    rewriters = app.state.orchestrator.pipeline.rewriters
    _REWRITERS[:] = [r for r in rewriters if isinstance(r, PromptRewriter)]
    with ServerThread(app) as served:
        yield served


def tokens_saved() -> int:
    """What the server's prompt optimizer has saved so far (it counts every rewrite)."""
    (rewriter,) = _REWRITERS
    return rewriter.tokens_saved_total


def openai_sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


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
    answer = httpx.post(
        url + "/v1/messages",
        json={
            "model": "echo",
            "max_tokens": 64,
            "optimize_prompt": "yes",
            "messages": [{"role": "user", "content": written(6)}],
        },
    )
    assert answer.status_code == 400
    assert "optimize_prompt" in answer.text


def test_the_anthropic_door_opts_in_by_header_or_field(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)

    def ask(n: int, **kw: object) -> str:
        message = client.messages.create(
            model="echo", max_tokens=256, messages=[{"role": "user", "content": written(n)}], **kw
        )  # type: ignore[call-overload]
        return str(message.content[0].text)

    assert ask(7, extra_headers={HEADER: "1"}) == optimized(7)
    assert ask(8, extra_body={"optimize_prompt": True}) == optimized(8)
    assert ask(9) == written(9)


def test_the_openai_door_opts_in_by_header_or_field(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    def ask(n: int, **kw: object) -> str:
        completion = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": written(n)}], **kw
        )  # type: ignore[call-overload]
        return str(completion.choices[0].message.content)

    assert ask(10, extra_headers={HEADER: "true"}) == optimized(10)
    assert ask(11, extra_body={"optimize_prompt": True}) == optimized(11)
    assert ask(12) == written(12)


def test_the_completions_door_opts_in_by_header_or_field(url: str) -> None:
    client = openai_sdk(url)

    def ask(n: int, **kw: object) -> tuple[str, int]:
        before = tokens_saved()
        completion = client.completions.create(
            model="echo", prompt=written(n), max_tokens=256, **kw
        )  # type: ignore[call-overload]
        return completion.choices[0].text, tokens_saved() - before

    answer, saved = ask(13, extra_headers={HEADER: "1"})
    assert answer == optimized(13) and saved > 0
    answer, saved = ask(14, extra_body={"optimize_prompt": True})
    assert answer == optimized(14) and saved > 0
    assert ask(15) == (written(15), 0)
    assert ask(16, extra_headers={HEADER: "1"}, extra_body={"optimize_prompt": False}) == (
        written(16),
        0,
    )
    streamed = client.completions.create(
        model="echo", prompt=written(17), max_tokens=256, stream=True, extra_headers={HEADER: "on"}
    )
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == optimized(17)


def test_the_responses_door_opts_in_by_header_or_field(url: str) -> None:
    client = openai_sdk(url)

    def ask(n: int, **kw: object) -> tuple[str, int]:
        before = tokens_saved()
        response = client.responses.create(model="echo", input=written(n), **kw)  # type: ignore[call-overload]
        return response.output_text, tokens_saved() - before

    answer, saved = ask(18, extra_headers={HEADER: "1"})
    assert answer == optimized(18) and saved > 0
    answer, saved = ask(19, extra_body={"optimize_prompt": True})
    assert answer == optimized(19) and saved > 0
    assert ask(20) == (written(20), 0)
    assert ask(21, extra_headers={HEADER: "true"}, extra_body={"optimize_prompt": False}) == (
        written(21),
        0,
    )
    with client.responses.stream(
        model="echo", input=written(22), extra_headers={HEADER: "1"}
    ) as stream:
        assert stream.get_final_response().output_text == optimized(22)
    bad = httpx.post(
        url + "/v1/responses",
        json={"model": "echo", "input": written(23), "optimize_prompt": "yes"},
    )
    assert bad.status_code == 400 and "optimize_prompt" in bad.text


def until_done(events: Iterator[object]) -> list[object]:
    answer = []
    for event in events:
        answer.append(event)
        if getattr(event, "type", "") in ("response.completed", "response.failed", "error"):
            return answer
    raise AssertionError("the socket closed before the response completed")


def test_the_responses_websocket_opts_in_by_the_upgrades_header_or_a_field(url: str) -> None:
    """The header comes once, with the upgrade, and holds for every response on the socket;
    a `response.create` field still wins over it."""
    client = openai_sdk(url)

    def answers(headers: dict[str, str], *bodies: dict[str, object]) -> list[tuple[str, int]]:
        got = []
        with client.responses.connect(extra_headers=headers) as connection:
            for body in bodies:
                before = tokens_saved()
                connection.send({"type": "response.create", "model": "echo", **body})  # type: ignore[typeddict-item]
                last = until_done(iter(connection))[-1]
                assert last.type == "response.completed", last  # type: ignore[attr-defined]
                got.append(
                    (
                        last.response.output_text,  # type: ignore[attr-defined]
                        tokens_saved() - before,
                    )
                )
        return got

    opted = answers(
        {HEADER: "1"},
        {"input": written(24)},
        {"input": written(25)},
        {"input": written(26), "optimize_prompt": False},
    )
    assert [text for text, _ in opted] == [optimized(24), optimized(25), written(26)]
    assert opted[0][1] > 0 and opted[1][1] > 0 and opted[2][1] == 0
    plain = answers({}, {"input": written(27)}, {"input": written(28), "optimize_prompt": True})
    assert plain[0] == (written(27), 0)
    assert plain[1][0] == optimized(28) and plain[1][1] > 0


def test_the_field_is_not_forwarded_in_a_native_responses_body() -> None:
    """To an OpenAI provider the body goes as it came, less our opt-in field (the optimizer
    leaves native bodies alone)."""
    data = {"model": "gpt-5", "input": written(29), "optimize_prompt": True, "stream": True}
    request = to_request(data, native=True, headers={HEADER: "1"})
    assert request.native == {"model": "gpt-5", "input": written(29)}
    assert request.metadata["optimize_prompt"] == "1"
