"""Request bodies, through real sockets and the real SDKs: each route's size limit, a cap on
messages per request, JSON errors a person can act on, and large bodies read off the loop."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
import rawhttp

from orchestrator.server import bodies
from orchestrator.server.bodies import LARGE_BODY_BYTES, MAX_ITEMS, off_loop
from orchestrator.server.body_limit import PROMPT_BODY_BYTES


def _chunked(path: str, chunks: list[bytes]) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks)
    return head + body + b"0\r\n\r\n"


# --- per-route limits ------------------------------------------------------------------------


def test_a_20_mb_prompt_is_refused_though_the_server_takes_32_mb(
    start_server: Callable[..., str],
) -> None:
    """`/v1/prompt` has its own limit, far below the gateway doors' `MAX_BODY_BYTES`."""
    url = start_server()
    body = json.dumps({"input": "a" * (20 * 1024 * 1024)}).encode()
    raw = rawhttp.request("POST", "/v1/prompt", "127.0.0.1",
                          "Content-Type: application/json", body=body)
    answer = rawhttp.exchange(url, raw, timeout_s=20)
    assert rawhttp.status_of(answer) == 413
    assert f"{PROMPT_BODY_BYTES} bytes (the limit for /v1/prompt)".encode() in answer


def test_a_chunked_prompt_over_its_route_limit_gets_413(start_server: Callable[..., str]) -> None:
    """Chunks each small, adding up past the prompt limit (no Content-Length to refuse)."""
    url = start_server()
    chunk = b"a" * (512 * 1024)
    chunks = [b'{"input": "', *([chunk] * ((PROMPT_BODY_BYTES // len(chunk)) + 2)), b'"}']
    answer = rawhttp.exchange(url, _chunked("/v1/prompt", chunks), timeout_s=20)
    assert rawhttp.status_of(answer) == 413


def test_feedback_has_a_small_limit(start_server: Callable[..., str]) -> None:
    url = start_server()
    body = {"request_id": "req_1", "score": 1, "comment": "x" * 40_000}
    response = httpx.post(url + "/v1/feedback", json=body)
    assert response.status_code == 413 and "/v1/feedback" in response.json()["error"]["message"]


def test_the_gateway_doors_still_take_large_conversations(
    start_server: Callable[..., str],
) -> None:
    """A 6 MB conversation (over the prompt limit) is served by `/v1/messages`."""
    url = start_server()
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    message = client.messages.create(
        model="echo", max_tokens=16,
        messages=[{"role": "user", "content": "word " * (1200 * 1024)}],
    )
    assert message.content[0].text.startswith("word word")  # type: ignore[union-attr]


# --- messages per request --------------------------------------------------------------------


def _turns(count: int) -> list[dict[str, str]]:
    return [{"role": ("user", "assistant")[i % 2], "content": "hi"} for i in range(count)]


@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
def test_anthropic_sdk_more_than_the_message_cap_is_a_400_naming_messages(
    start_server: Callable[..., str], native: bool
) -> None:
    url = start_server()
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    extra: dict[str, Any] = {"tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    with pytest.raises(anthropic.BadRequestError, match=f"messages: at most {MAX_ITEMS}"):
        client.messages.create(
            model="echo", max_tokens=16, messages=_turns(MAX_ITEMS + 1),  # type: ignore[arg-type]
            **(extra if native else {}),
        )
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        client.messages.count_tokens(model="echo", messages=_turns(MAX_ITEMS + 1))  # type: ignore[arg-type]


def test_openai_sdk_more_than_the_message_cap_is_a_400(start_server: Callable[..., str]) -> None:
    url = start_server()
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match=f"at most {MAX_ITEMS}"):
        client.chat.completions.create(model="echo", messages=_turns(MAX_ITEMS + 1))  # type: ignore[arg-type]


def test_exactly_the_cap_is_served(start_server: Callable[..., str]) -> None:
    url = start_server()
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    turns = _turns(MAX_ITEMS)
    message = client.messages.create(model="echo", max_tokens=16, messages=turns)  # type: ignore[arg-type]
    assert message.content[0].text == "hi"  # type: ignore[union-attr]


# --- errors a person can act on --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/prompt", "/v1/messages", "/v1/chat/completions"])
def test_malformed_json_names_its_line_and_column(
    start_server: Callable[..., str], path: str
) -> None:
    url = start_server()
    response = httpx.post(url + path, content=b'{"input": "hi",\n  "stream": tru}',
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    text = json.dumps(response.json())
    assert "line 2, column 13" in text and "JSON decode error" not in text


@pytest.mark.parametrize("path", ["/v1/prompt", "/v1/messages", "/v1/chat/completions"])
def test_a_text_plain_body_is_told_to_send_json(
    start_server: Callable[..., str], path: str
) -> None:
    url = start_server()
    response = httpx.post(url + path, content=b'{"input": "hi"}',
                          headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "send application/json" in json.dumps(response.json())


def test_a_body_without_a_content_type_is_read_as_json(start_server: Callable[..., str]) -> None:
    url = start_server()
    raw = rawhttp.request("POST", "/v1/prompt", "127.0.0.1", body=b'{"input": "plain curl"}')
    answer = rawhttp.exchange(url, raw)
    assert rawhttp.status_of(answer) == 200 and b"plain curl" in answer


# --- large bodies off the event loop ---------------------------------------------------------


async def test_off_loop_uses_a_thread_only_for_large_bodies() -> None:
    here = threading.get_ident()
    assert await off_loop(LARGE_BODY_BYTES, threading.get_ident) == here
    assert await off_loop(LARGE_BODY_BYTES + 1, threading.get_ident) != here


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/messages", "/v1/prompt"])
def test_health_answers_while_a_large_body_is_parsed(
    start_server: Callable[..., str], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The parse of a large body is held until `/health` has answered: if it ran on the
    event loop, `/health` could not answer and this would time out."""
    parsing, health_answered = threading.Event(), threading.Event()
    parse = bodies._object_of

    def held(raw: bytes) -> dict[str, Any]:
        parsing.set()
        assert health_answered.wait(10), "/health did not answer while the body was parsed"
        return parse(raw)

    monkeypatch.setattr(bodies, "_object_of", held)
    url = start_server()
    text = "word " * (LARGE_BODY_BYTES // 4)
    body = (
        {"input": text}
        if path == "/v1/prompt"
        else {"model": "echo", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    )
    result: dict[str, Any] = {}
    poster = threading.Thread(
        target=lambda: result.update(r=httpx.post(url + path, json=body, timeout=30))
    )
    poster.start()
    assert parsing.wait(10)
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    health_answered.set()
    poster.join(30)
    assert result["r"].status_code == 200
