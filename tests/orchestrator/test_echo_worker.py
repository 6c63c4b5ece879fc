"""EchoWorker: the offline provider."""

from __future__ import annotations

import asyncio

import pytest
from fakeclock import FakeClock

from orchestrator import EchoWorker, InferenceRequest, Message, ProviderError


async def test_echoes_the_last_user_message() -> None:
    """The answer is the last user turn; usage is estimated."""
    request = InferenceRequest(
        messages=(Message("user", "first"), Message("assistant", "ok"), Message("user", "second"))
    )
    completion = await EchoWorker().complete(request, timeout_s=1)
    assert completion.text == "second"
    assert completion.usage.output_tokens == 2
    assert completion.usage.input_tokens > 0


async def test_streams_word_by_word_with_usage_last() -> None:
    """Chunks are the words; only the last has finish_reason and usage."""
    chunks = [c async for c in EchoWorker().stream(InferenceRequest("a b c"), timeout_s=1)]
    assert [c.text for c in chunks] == ["a ", "b ", "c"]
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]
    assert chunks[-1].usage is not None and chunks[0].usage is None


async def test_latency_uses_the_injected_sleep(clock: FakeClock) -> None:
    """Configured latency is waited through `sleep`."""
    worker = EchoWorker(latency_s=0.25, sleep=clock.sleep)
    await worker.complete(InferenceRequest("x"), timeout_s=1)
    assert clock.slept_s == [0.25]
    assert worker.calls == 1


async def test_latency_beyond_the_timeout_is_a_retryable_timeout(clock: FakeClock) -> None:
    """A call slower than its timeout raises a retryable ProviderError after the timeout."""
    worker = EchoWorker(latency_s=5, sleep=clock.sleep)
    with pytest.raises(ProviderError) as info:
        await worker.complete(InferenceRequest("x"), timeout_s=1)
    assert info.value.retryable
    assert clock.slept_s == [1]


def test_negative_latency_is_refused() -> None:
    """latency_s is validated."""
    with pytest.raises(ValueError, match="latency_s"):
        EchoWorker(latency_s=-1)


async def test_echo_cuts_its_answer_at_max_tokens() -> None:
    """An answer longer than `max_tokens` (four characters a token) stops there: `length`."""
    worker = EchoWorker()
    request = InferenceRequest(prompt="abcd " * 100, max_tokens=3)
    completion = await worker.complete(request, timeout_s=5)
    assert completion.text == "abcd abcd ab" and completion.finish_reason == "length"
    chunks = [c async for c in worker.stream(request, timeout_s=5)]
    assert "".join(c.text for c in chunks) == "abcd abcd ab"
    assert chunks[-1].finish_reason == "length"


async def test_echo_streaming_gives_the_loop_its_turn() -> None:
    """While a long answer streams, other tasks run between its chunks."""
    worker = EchoWorker()
    request = InferenceRequest(prompt="w " * 1000, max_tokens=100_000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    async for _ in worker.stream(request, timeout_s=5):
        pass
    task.cancel()
    assert ticks - before >= 500
