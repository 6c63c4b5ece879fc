"""EchoWorker: the offline provider."""

from __future__ import annotations

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
