"""The pipeline over the real SDK-based workers, against fake upstream HTTP servers."""

from __future__ import annotations

import asyncio

import pytest
from fakeclock import FakeClock
from fakes import CutStream, Fail, FakeAnthropic, FakeOpenAI

from orchestrator import (
    InferenceRequest,
    Pipeline,
    PipelineConfig,
    ProviderError,
    Tunables,
)
from orchestrator.providers.anthropic import AnthropicWorker
from orchestrator.providers.openai import OpenAIWorker

API_KEY = "sk-test-pipeline-0000"


def _config(**tunables: object) -> PipelineConfig:
    return PipelineConfig(tunables=Tunables(**tunables), cache_enabled=False, seed=5)  # type: ignore[arg-type]


async def test_dead_primary_falls_back_then_recovers(clock: FakeClock) -> None:
    """Anthropic answering 500s: each request costs it one call until its breaker opens, OpenAI
    answers; when Anthropic comes back and the open time passes, traffic returns to it."""
    async with (
        FakeAnthropic(reply="from anthropic") as primary,
        FakeOpenAI(reply="from openai") as backup,
    ):
        primary.fail_always(Fail(status=500))
        workers = (
            AnthropicWorker(API_KEY, base_url=primary.url),
            OpenAIWorker(API_KEY, base_url=backup.url + "/v1"),
        )
        async with Pipeline(_config(), *workers, clock=clock, sleep=clock.sleep) as pipeline:
            down = [await pipeline.infer(InferenceRequest(f"q{i}")) for i in range(8)]
            assert {r.provider for r in down} == {"openai"}
            assert {r.text for r in down} == {"from openai"}
            assert primary.request_count == 5
            assert clock.slept_s == []
            primary.fail_always(None)
            clock.advance(60)
            up = [await pipeline.infer(InferenceRequest(f"u{i}")) for i in range(5)]
            snapshot = pipeline.snapshot()
    assert {r.provider for r in up} == {"anthropic"}
    assert snapshot.providers[0].breaker_state == "closed"


async def test_429_with_retry_after_is_waited_then_retried(clock: FakeClock) -> None:
    """The provider's Retry-After reaches the retry policy through the real SDK."""
    async with FakeOpenAI(reply="ok") as upstream:
        upstream.fail_next(Fail(status=429, retry_after="3"))
        worker = OpenAIWorker(API_KEY, base_url=upstream.url + "/v1")
        async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
            response = await pipeline.infer(InferenceRequest("q"))
    assert response.text == "ok"
    assert upstream.request_count == 2
    assert clock.slept_s == [pytest.approx(3.0)]


async def test_400_is_not_retried(clock: FakeClock) -> None:
    """A bad request reaches the caller after exactly one upstream call."""
    async with FakeAnthropic() as upstream:
        upstream.fail_always(Fail(status=400))
        worker = AnthropicWorker(API_KEY, base_url=upstream.url)
        async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
            with pytest.raises(ProviderError) as info:
                await pipeline.infer(InferenceRequest("q"))
    assert info.value.status == 400 and not info.value.retryable
    assert upstream.request_count == 1


async def test_identical_streams_share_one_upstream_stream() -> None:
    """Ten identical concurrent streams make one HTTP request; every reader gets the answer."""
    async with FakeAnthropic(reply="one two three four") as upstream:
        upstream.hold()
        worker = AnthropicWorker(API_KEY, base_url=upstream.url)
        async with Pipeline(PipelineConfig(), worker) as pipeline:

            async def read() -> str:
                return "".join([c.text async for c in pipeline.stream(InferenceRequest("q"))])

            readers = [asyncio.create_task(read()) for _ in range(10)]
            await upstream.wait_for_requests(1)
            upstream.release()
            texts = await asyncio.gather(*readers)
    assert upstream.request_count == 1
    assert set(texts) == {"one two three four"}


async def test_a_stream_cut_mid_answer_reaches_the_caller_without_a_repeat(
    clock: FakeClock,
) -> None:
    """The caller keeps the chunks that arrived, then gets the error; nothing is re-sent."""
    async with FakeOpenAI(reply="alpha beta gamma delta") as upstream:
        upstream.fail_next(CutStream(after_chunks=2))
        worker = OpenAIWorker(API_KEY, base_url=upstream.url + "/v1")
        received: list[str] = []
        async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
            with pytest.raises(ProviderError) as info:
                async for chunk in pipeline.stream(InferenceRequest("q")):
                    received.append(chunk.text)
    assert info.value.retryable
    assert "".join(received).split() == ["alpha", "beta"]
    assert upstream.request_count == 1


_NATIVE = {
    "model": "claude-fake",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
}


async def test_a_native_request_skips_providers_that_cannot_take_it() -> None:
    """With OpenAI first in the order, a native Anthropic body goes to Anthropic only, and its
    answer comes back as the message the upstream sent."""
    async with (
        FakeAnthropic(reply="a picture") as anthropic_up,
        FakeOpenAI(reply="from openai") as openai_up,
    ):
        pipeline = Pipeline(
            _config(),
            OpenAIWorker(API_KEY, base_url=openai_up.url + "/v1"),
            AnthropicWorker(API_KEY, base_url=anthropic_up.url),
        )
        async with pipeline:
            request = InferenceRequest(prompt="[image]", model="claude-fake", native=_NATIVE)
            response = await pipeline.infer(request)
    assert openai_up.request_count == 0
    assert anthropic_up.requests[0].body["messages"] == _NATIVE["messages"]
    assert response.text == "a picture" and response.provider == "anthropic"
    assert response.native is not None and response.native["id"] == "msg_fake_1"


async def test_a_native_request_with_no_capable_provider_fails_without_a_call() -> None:
    """Only OpenAI configured: a native Anthropic request fails with a non-retryable 400."""
    async with FakeOpenAI(reply="from openai") as upstream:
        pipeline = Pipeline(_config(), OpenAIWorker(API_KEY, base_url=upstream.url + "/v1"))
        async with pipeline:
            with pytest.raises(ProviderError, match="native 'anthropic'") as caught:
                await pipeline.infer(InferenceRequest(prompt="[image]", native=_NATIVE))
    assert caught.value.status == 400 and not caught.value.retryable
    assert upstream.request_count == 0
