"""The OpenAI door passes the client's token limit through, and adds none of its own."""

from __future__ import annotations

import openai
import pytest
from fakes import FakeOpenAI

from orchestrator import OpenAIWorker, Pipeline, PipelineConfig
from orchestrator.server import ServerTask, create_app


@pytest.mark.parametrize(
    ("given", "field", "sent"),
    [
        ({}, "max_completion_tokens", None),
        ({"max_tokens": 5000}, "max_completion_tokens", 5000),
        ({"max_completion_tokens": 7000}, "max_completion_tokens", 7000),
        ({}, "max_tokens", None),
        ({"max_tokens": 5000}, "max_tokens", 5000),
    ],
)
async def test_the_clients_limit_or_none_reaches_the_upstream(
    given: dict[str, int], field: str, sent: int | None
) -> None:
    async with FakeOpenAI() as upstream:
        worker = OpenAIWorker("sk-up", base_url=upstream.api_url, model="gpt-x",
                              max_tokens_field=field)  # type: ignore[arg-type]
        async with ServerTask(create_app(Pipeline(PipelineConfig(), worker))) as url:
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            await client.chat.completions.create(
                model="gpt-x", messages=[{"role": "user", "content": "hi"}], **given
            )
    body = upstream.requests[-1].body
    assert body.get(field) == sent
    assert "max_tokens" not in body or field == "max_tokens"
    if sent is None:
        assert "max_tokens" not in body and "max_completion_tokens" not in body
