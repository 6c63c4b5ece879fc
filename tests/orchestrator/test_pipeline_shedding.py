"""Bounded queues: shedding with Overloaded, lowest priority first; priorities and ageing."""

from __future__ import annotations

import asyncio

import pytest
from pipeline_fakes import GatedWorker, settle

from orchestrator import (
    InferenceRequest,
    Overloaded,
    Pipeline,
    PipelineConfig,
    Priority,
    Tunables,
)


def _config(**tunables: object) -> PipelineConfig:
    base = {
        "inference_concurrency": 1,
        "inference_queue_capacity": 2,
        "shed_threshold": 1.0,
    }
    base.update(tunables)
    return PipelineConfig(tunables=Tunables(**base), inference_shards=1)  # type: ignore[arg-type]


async def test_full_queue_sheds_with_overloaded_and_counts_it() -> None:
    """Beyond one running and two queued, further requests fail fast with Overloaded."""
    worker = GatedWorker()
    async with Pipeline(_config(), worker) as pipeline:
        calls = []
        for i in range(6):
            calls.append(asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))))
            await settle()
        shed = [c for c in calls if c.done()]
        assert len(shed) == 3
        for call in shed:
            with pytest.raises(Overloaded) as info:
                await call
            assert info.value.stage == "inference[0]"
        snapshot = pipeline.snapshot()
        assert snapshot.shed_total == 3
        assert snapshot.stages[2].shed_total == 3 and snapshot.stages[2].depth == 2
        worker.gate.set()
        await asyncio.gather(*(c for c in calls if c not in shed))
        assert pipeline.snapshot().errors_by_type == {"Overloaded": 3}


async def test_high_priority_displaces_queued_low_priority() -> None:
    """A high request finding the queue full of low work takes the newest low one's place."""
    worker = GatedWorker()
    async with Pipeline(_config(), worker) as pipeline:
        running = asyncio.create_task(pipeline.infer(InferenceRequest("running")))
        await settle()
        lows = []
        for name in ("low-a", "low-b"):
            lows.append(
                asyncio.create_task(pipeline.infer(InferenceRequest(name, priority=Priority.LOW)))
            )
            await settle()
        high = asyncio.create_task(pipeline.infer(InferenceRequest("high", priority="high")))
        await settle()
        with pytest.raises(Overloaded) as info:
            await lows[1]
        assert info.value.priority == "low"
        worker.gate.set()
        await asyncio.gather(running, high, lows[0])
    assert worker.started == ["running", "high", "low-a"]


async def test_low_priority_is_shed_first_above_the_threshold() -> None:
    """Past the shed threshold low requests are refused while normal ones are still queued."""
    worker = GatedWorker()
    config = _config(inference_queue_capacity=4, shed_threshold=0.5)
    async with Pipeline(config, worker) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(InferenceRequest("running")))]
        await settle()
        for name in ("n1", "n2"):
            calls.append(asyncio.create_task(pipeline.infer(InferenceRequest(name))))
            await settle()
        low = asyncio.create_task(pipeline.infer(InferenceRequest("low", priority="low")))
        normal = asyncio.create_task(pipeline.infer(InferenceRequest("n3")))
        await settle()
        with pytest.raises(Overloaded):
            await low
        worker.gate.set()
        await asyncio.gather(*calls, normal)


async def test_queued_work_is_served_by_priority() -> None:
    """With one slot, queued requests start critical, high, normal, low."""
    worker = GatedWorker()
    config = _config(inference_queue_capacity=10)
    async with Pipeline(config, worker) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(InferenceRequest("first")))]
        await settle()
        for priority in ("low", "normal", "critical", "high"):
            request = InferenceRequest(priority, priority=priority)  # type: ignore[arg-type]
            calls.append(asyncio.create_task(pipeline.infer(request)))
            await settle()
        worker.gate.set()
        await asyncio.gather(*calls)
    assert worker.started == ["first", "critical", "high", "normal", "low"]


async def test_every_request_is_answered_or_refused_under_a_flood() -> None:
    """A burst far beyond capacity: each request either succeeds or gets Overloaded; none hangs."""
    worker = GatedWorker()
    config = _config(rag_queue_capacity=8, assemble_queue_capacity=8, inference_queue_capacity=8)
    async with Pipeline(config, worker) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))) for i in range(200)]
        await settle()
        worker.gate.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        snapshot = pipeline.snapshot()
    refused = [r for r in results if isinstance(r, Overloaded)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) + len(answered) == 200
    assert len(refused) == snapshot.shed_total > 0
    assert snapshot.in_flight == 0
