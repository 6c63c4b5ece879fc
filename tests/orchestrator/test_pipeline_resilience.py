"""Retries, fallback, breakers, rate limits and deadlines, as the pipeline applies them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fakeclock import FakeClock
from pipeline_fakes import GatedWorker, ScriptedWorker

from orchestrator import (
    CircuitOpen,
    DeadlineExceeded,
    InferenceRequest,
    Pipeline,
    PipelineConfig,
    ProviderError,
    StreamChunk,
    Tunables,
)


def _unavailable(provider: str = "p", retry_after_s: float | None = None) -> ProviderError:
    return ProviderError(
        provider, "unavailable", status=503, retryable=True, retry_after_s=retry_after_s
    )


def _config(**tunables: object) -> PipelineConfig:
    return PipelineConfig(tunables=Tunables(**tunables), cache_enabled=False, seed=1)  # type: ignore[arg-type]


async def test_a_retryable_failure_is_retried_after_a_backoff(clock: FakeClock) -> None:
    """A 503 then success: two calls, one backoff slept on the injected clock."""
    worker = ScriptedWorker(script=[_unavailable()])
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        response = await pipeline.infer(InferenceRequest("q"))
        snapshot = pipeline.snapshot()
    assert response.text == "q"
    assert worker.calls == 2
    assert len(clock.slept_s) == 1 and 0 <= clock.slept_s[0] <= 0.5
    assert snapshot.retries == 1 and snapshot.upstream_calls == 2


async def test_a_non_retryable_error_is_not_retried(clock: FakeClock) -> None:
    """A 400 goes straight back to the caller after one call."""
    bad = ProviderError("scripted", "bad request", status=400, retryable=False)
    worker = ScriptedWorker(script=[bad])
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        with pytest.raises(ProviderError) as info:
            await pipeline.infer(InferenceRequest("q"))
    assert info.value.status == 400
    assert worker.calls == 1 and clock.slept_s == []


async def test_retry_after_is_honoured(clock: FakeClock) -> None:
    """A 429 with Retry-After: 7 waits at least 7 s before the next try."""
    worker = ScriptedWorker(script=[_unavailable(retry_after_s=7.0)])
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        await pipeline.infer(InferenceRequest("q"))
    assert clock.slept_s == [7.0]


async def test_retries_stop_at_max_attempts(clock: FakeClock) -> None:
    """With 3 attempts, a provider that keeps failing is called 3 times, then the error shows."""
    worker = ScriptedWorker(script=[_unavailable()] * 10)
    config = _config(retry_max_attempts=3, breaker_failure_threshold=100)
    async with Pipeline(config, worker, clock=clock, sleep=clock.sleep) as pipeline:
        with pytest.raises(ProviderError, match="unavailable"):
            await pipeline.infer(InferenceRequest("q"))
    assert worker.calls == 3


async def test_a_dead_primary_costs_one_fallback_call_then_none(clock: FakeClock) -> None:
    """Each request tries the dead primary once and falls back at once, without backoff; after
    five failures its breaker opens and it is not called at all."""
    primary = ScriptedWorker("primary", script=[_unavailable("primary")] * 100)
    backup = ScriptedWorker("backup")
    async with Pipeline(_config(), primary, backup, clock=clock, sleep=clock.sleep) as pipeline:
        responses = [await pipeline.infer(InferenceRequest(f"q{i}")) for i in range(10)]
        snapshot = pipeline.snapshot()
    assert {r.provider for r in responses} == {"backup"}
    assert primary.calls == 5 and backup.calls == 10
    assert clock.slept_s == []
    assert snapshot.fallbacks == 10
    assert snapshot.providers[0].breaker_state == "open"


async def test_a_primary_that_comes_back_is_used_again(clock: FakeClock) -> None:
    """After the open period, probes reach the recovered primary and its breaker closes."""
    primary = ScriptedWorker("primary", script=[_unavailable("primary")] * 5)
    backup = ScriptedWorker("backup")
    async with Pipeline(_config(), primary, backup, clock=clock, sleep=clock.sleep) as pipeline:
        for i in range(6):
            await pipeline.infer(InferenceRequest(f"down{i}"))
        clock.advance(60)
        after = [await pipeline.infer(InferenceRequest(f"up{i}")) for i in range(5)]
        snapshot = pipeline.snapshot()
    assert [r.provider for r in after] == ["primary"] * 5
    assert snapshot.providers[0].breaker_state == "closed"


async def test_fallback_order_is_configurable(clock: FakeClock) -> None:
    """`fallback_order` names which worker is tried first."""
    a, b = ScriptedWorker("a"), ScriptedWorker("b")
    config = PipelineConfig(fallback_order=("b",), cache_enabled=False)
    async with Pipeline(config, a, b, clock=clock) as pipeline:
        response = await pipeline.infer(InferenceRequest("q"))
    assert response.provider == "b" and a.calls == 0


async def test_all_breakers_open_fails_fast_with_circuit_open(clock: FakeClock) -> None:
    """When every provider's breaker is open the request fails at once, calling nobody."""
    worker = ScriptedWorker(script=[_unavailable()] * 5)
    config = _config(retry_max_attempts=1)
    async with Pipeline(config, worker, clock=clock, sleep=clock.sleep) as pipeline:
        for i in range(5):
            with pytest.raises(ProviderError):
                await pipeline.infer(InferenceRequest(f"q{i}"))
        with pytest.raises(CircuitOpen) as info:
            await pipeline.infer(InferenceRequest("next"))
    assert info.value.provider == "scripted"
    assert worker.calls == 5


async def test_timeouts_count_as_breaker_failures(clock: FakeClock) -> None:
    """A worker raising TimeoutError is a failure that feeds the breaker."""

    class TimingOut(ScriptedWorker):
        async def complete(self, request: InferenceRequest, *, timeout_s: float):  # type: ignore[no-untyped-def]
            self.calls += 1
            raise TimeoutError

    worker = TimingOut()
    config = _config(retry_max_attempts=1, breaker_failure_threshold=2)
    async with Pipeline(config, worker, clock=clock, sleep=clock.sleep) as pipeline:
        for i in range(2):
            with pytest.raises(ProviderError, match="timed out"):
                await pipeline.infer(InferenceRequest(f"q{i}"))
        assert pipeline.snapshot().providers[0].breaker_state == "open"


async def test_rate_limit_waits_for_a_token(clock: FakeClock) -> None:
    """At 1 request/s the second request waits about a second (on the injected clock)."""
    worker = ScriptedWorker()
    config = _config(rate_limit_rps=1.0)
    async with Pipeline(config, worker, clock=clock, sleep=clock.sleep) as pipeline:
        await pipeline.infer(InferenceRequest("a"))
        await pipeline.infer(InferenceRequest("b"))
    assert worker.calls == 2
    assert clock.slept_s == [pytest.approx(1.0)]


async def test_deadline_exceeded_while_waiting_for_the_provider() -> None:
    """A request whose provider does not answer within timeout_s fails with DeadlineExceeded."""
    worker = GatedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        with pytest.raises(DeadlineExceeded) as info:
            await pipeline.infer(InferenceRequest("q", timeout_s=0.05))
        assert pipeline.snapshot().errors_by_type == {"DeadlineExceeded": 1}
    assert info.value.where == "inference"
    assert worker.active == 0  # the upstream call was cancelled


async def test_a_stream_is_retried_before_its_first_chunk(clock: FakeClock) -> None:
    """A stream failing before any chunk is retried like a completion."""
    worker = ScriptedWorker(script=[_unavailable()])
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        chunks = [c.text async for c in pipeline.stream(InferenceRequest("hello"))]
    assert "".join(chunks) == "hello" and worker.calls == 2


async def test_a_stream_cut_mid_answer_is_not_retried(clock: FakeClock) -> None:
    """Once chunks have gone out, a failure ends the stream with the error; no repeat."""

    class Cutting(ScriptedWorker):
        async def stream(  # type: ignore[override]
            self, request: InferenceRequest, *, timeout_s: float
        ) -> AsyncIterator[StreamChunk]:
            self.calls += 1
            yield StreamChunk(text="partial ", index=0)
            raise ProviderError(self.name, "stream cut", retryable=True)

    worker = Cutting()
    received: list[str] = []
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        with pytest.raises(ProviderError, match="stream cut"):
            async for chunk in pipeline.stream(InferenceRequest("q")):
                received.append(chunk.text)
        await asyncio.sleep(0)
        assert pipeline.snapshot().errors_by_type == {"ProviderError": 1}
    assert received == ["partial "] and worker.calls == 1


async def test_a_hung_primary_leaves_time_for_the_fallback() -> None:
    """A primary that never answers gets half the deadline; the backup answers in the rest."""
    hung, backup = GatedWorker("hung"), ScriptedWorker("backup")
    async with Pipeline(PipelineConfig(cache_enabled=False), hung, backup) as pipeline:
        response = await pipeline.infer(InferenceRequest("q", timeout_s=0.2))
    assert response.provider == "backup"
    assert hung.calls == 1 and hung.active == 0


async def test_a_fallback_answers_with_its_own_default_model(clock: FakeClock) -> None:
    """A model name is the primary's; the fallback is asked for its default model instead."""
    primary = ScriptedWorker("primary", script=[_unavailable("primary")], model="big-model")
    backup = ScriptedWorker("backup", model="backup-model")
    async with Pipeline(_config(), primary, backup, clock=clock, sleep=clock.sleep) as pipeline:
        response = await pipeline.infer(InferenceRequest("q", model="big-model"))
    assert primary.requests[0].model == "big-model"
    assert backup.requests[0].model is None
    assert response.model == "backup-model"


async def test_a_call_cancelled_before_it_starts_gives_back_its_slot_and_flight() -> None:
    """A deadline landing between scheduling a call and its first step leaks nothing."""

    class CancelledOnArrival(set):  # type: ignore[type-arg]
        def add(self, task: asyncio.Task[None]) -> None:
            super().add(task)
            task.cancel()  # as `_expire` would, before the task ever runs

    worker = ScriptedWorker()
    pipeline = Pipeline(PipelineConfig(), worker)
    pipeline.inference._tasks = CancelledOnArrival()
    async with pipeline:
        with pytest.raises(DeadlineExceeded):
            await pipeline.infer(InferenceRequest("q"))
        assert pipeline.inference.limit.active == 0
        assert len(pipeline.coalescer) == 0
        assert pipeline.snapshot().in_flight == 0
    assert worker.calls == 0
