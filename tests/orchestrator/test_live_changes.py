"""Live config: changing tunables while traffic flows takes effect without a restart."""

from __future__ import annotations

import asyncio

import pytest
from fakeclock import FakeClock
from pipeline_fakes import GatedWorker, ScriptedWorker, settle

from orchestrator import (
    InferenceRequest,
    LiveConfig,
    Overloaded,
    Pipeline,
    PipelineConfig,
    ProviderError,
    Tunables,
)


async def test_raising_inference_concurrency_while_busy_starts_waiting_work() -> None:
    """At concurrency 2 only two calls run; raising it to 5 mid-flight starts three more."""
    worker = GatedWorker()
    live = LiveConfig(Tunables(inference_concurrency=2))
    async with Pipeline(PipelineConfig(inference_shards=1), worker, live=live) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))) for i in range(8)]
        await settle()
        assert worker.active == 2
        assert pipeline.snapshot().inference_concurrency == 2
        changed = pipeline.live.set(inference_concurrency=5)
        await settle()
        assert changed == {"inference_concurrency": (2, 5)}
        assert worker.active == 5
        worker.gate.set()
        await asyncio.gather(*calls)
    assert worker.max_active == 5


async def test_lowering_concurrency_applies_as_calls_finish() -> None:
    """Lowering the limit never cancels running calls; new ones start only below the new limit."""
    worker = GatedWorker()
    live = LiveConfig(Tunables(inference_concurrency=4))
    async with Pipeline(PipelineConfig(inference_shards=1), worker, live=live) as pipeline:
        first = [asyncio.create_task(pipeline.infer(InferenceRequest(f"a{i}"))) for i in range(4)]
        await settle()
        live.set(inference_concurrency=1)
        worker.gate.set()
        await asyncio.gather(*first)
        worker.gate.clear()
        worker.max_active = 0
        second = [asyncio.create_task(pipeline.infer(InferenceRequest(f"b{i}"))) for i in range(4)]
        await settle()
        assert worker.active == 1
        worker.gate.set()
        await asyncio.gather(*second)


async def test_queue_capacity_change_applies_to_the_next_arrival() -> None:
    """Shrinking a stage queue's capacity while it holds work sheds the next arrival."""
    worker = GatedWorker()
    live = LiveConfig(Tunables(inference_concurrency=1, shed_threshold=1.0))
    config = PipelineConfig(inference_shards=1)
    async with Pipeline(config, worker, live=live) as pipeline:
        calls = []
        for i in range(4):
            calls.append(asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))))
            await settle()
        assert pipeline.snapshot().stages[2].depth == 3
        live.set(inference_queue_capacity=3)
        late = asyncio.create_task(pipeline.infer(InferenceRequest("late")))
        await settle()
        with pytest.raises(Overloaded):
            await late
        assert pipeline.snapshot().stages[2].capacity == 3
        worker.gate.set()
        await asyncio.gather(*calls)


async def test_breaker_threshold_and_retry_attempts_change_live(clock: FakeClock) -> None:
    """Lowering the breaker threshold and retry attempts mid-run changes the next requests."""
    failing = ProviderError("scripted", "down", status=503, retryable=True)
    worker = ScriptedWorker(script=[failing] * 20)
    config = PipelineConfig(cache_enabled=False)
    async with Pipeline(config, worker, clock=clock, sleep=clock.sleep) as pipeline:
        with pytest.raises(ProviderError):
            await pipeline.infer(InferenceRequest("a"))
        assert worker.calls == 3  # default retry_max_attempts
        pipeline.live.set(retry_max_attempts=1, breaker_failure_threshold=4)
        with pytest.raises(ProviderError):
            await pipeline.infer(InferenceRequest("b"))
        assert worker.calls == 4
        assert pipeline.snapshot().providers[0].breaker_state == "open"


async def test_cache_ttl_change_applies_to_new_entries(clock: FakeClock) -> None:
    """A shorter live cache TTL makes the next stored answer expire sooner."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker, clock=clock) as pipeline:
        pipeline.live.set(cache_ttl_s=5.0)
        await pipeline.infer(InferenceRequest("q"))
        clock.advance(4)
        assert (await pipeline.infer(InferenceRequest("q"))).cached
        clock.advance(2)
        assert not (await pipeline.infer(InferenceRequest("q"))).cached
    assert worker.calls == 2


async def test_a_closed_pipeline_stops_listening_to_a_shared_live_config() -> None:
    """A LiveConfig that outlives a pipeline holds no reference to it after close."""
    live = LiveConfig()
    async with Pipeline(PipelineConfig(), ScriptedWorker(), live=live):
        assert live._listeners
    assert live._listeners == []
