"""What is particular to `LlamaCppWorker`: the chat template and the `/completion` request."""

from __future__ import annotations

import pytest
from fakes import FakeLlamaCpp

from orchestrator.providers.llamacpp import CHATML, ChatTemplate, LlamaCppWorker
from orchestrator.request import InferenceRequest, Message


def test_chatml_renders_system_turns_and_open_assistant_turn() -> None:
    """ChatML wraps each turn and leaves the assistant's turn open for generation."""
    prompt = CHATML.render("be brief", (Message("user", "hi"), Message("assistant", "hello")))
    assert prompt == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_template_keeps_braces_in_content() -> None:
    """Message text with braces is inserted verbatim, not treated as a format string."""
    assert "{x}" in CHATML.render(None, (Message("user", "{x}"),))


def test_template_needs_a_content_slot() -> None:
    """A turn format without `{content}` is rejected, naming the field."""
    with pytest.raises(ValueError, match="user"):
        ChatTemplate(user="<user>")


async def test_request_sends_templated_prompt_and_limits(fake_llamacpp: FakeLlamaCpp) -> None:
    """The request carries the rendered prompt, `n_predict`, the template's stops and the key."""
    worker = LlamaCppWorker(fake_llamacpp.url, api_key="local-key")
    try:
        await worker.complete(
            InferenceRequest("hi", system="be brief", max_tokens=9, temperature=0.1), timeout_s=5
        )
    finally:
        await worker.aclose()
    sent = fake_llamacpp.requests[0]
    assert sent.path == "/completion"
    assert sent.body["prompt"] == CHATML.render("be brief", (Message("user", "hi"),))
    assert (sent.body["n_predict"], sent.body["temperature"]) == (9, 0.1)
    assert sent.body["stop"] == ["<|im_end|>"]
    assert sent.headers["Authorization"] == "Bearer local-key"


async def test_completion_reports_the_configured_model(fake_llamacpp: FakeLlamaCpp) -> None:
    """The model name reported is ours, not the server's file path."""
    worker = LlamaCppWorker(fake_llamacpp.url, model="qwen-7b")
    try:
        completion = await worker.complete(InferenceRequest("hi"), timeout_s=5)
    finally:
        await worker.aclose()
    assert completion.model == "qwen-7b"


async def test_stream_survives_a_final_event_longer_than_a_line_buffer(
    fake_llamacpp: FakeLlamaCpp,
) -> None:
    """The final event echoes the prompt; a 700 KB prompt (a long agent context) still streams."""
    worker = LlamaCppWorker(fake_llamacpp.url)
    prompt = "word " * 140_000
    try:
        chunks = [c async for c in worker.stream(InferenceRequest(prompt), timeout_s=5)]
    finally:
        await worker.aclose()
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.input_tokens > 140_000


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"base_url": "localhost:8080"}, "base_url"),
        ({"api_key": ""}, "api_key"),
        ({"model": ""}, "model"),
        ({"stall_timeout_s": 0}, "stall_timeout_s"),
        ({"max_connections": 0}, "max_connections"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object], name: str) -> None:
    """Bad constructor arguments raise ValueError naming the parameter."""
    arguments: dict[str, object] = {"base_url": "http://127.0.0.1:8080", **kwargs}
    with pytest.raises(ValueError, match=name):
        LlamaCppWorker(**arguments)  # type: ignore[arg-type]
