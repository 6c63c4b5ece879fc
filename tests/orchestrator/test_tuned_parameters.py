"""Each pipeline parameter the self-tuner owns: a change the `TuningController` makes (from a
snapshot that calls for it) changes what the component does — not just a stored value.

The fleet's two (`agents`, `lease_s`) are in tests/coordinator/test_tuned_fleet.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import pytest
from fakeclock import FakeClock
from pipeline_fakes import GatedWorker, ScriptedWorker, settle

from orchestrator import (
    CircuitOpen,
    InferenceRequest,
    LiveConfig,
    Overloaded,
    Pipeline,
    PipelineConfig,
    ProviderError,
    Tunables,
)
from self_tune.controller import TuningController
from self_tune.experiment import ExperimentSettings
from self_tune.journal import Change, ChangeKind
from self_tune.live import LocalConfig
from self_tune.telemetry import TelemetrySnapshot


def tune(live: LiveConfig[Tunables], name: str, *snapshots: Mapping[str, float]) -> Change:
    """Step a controller tuning only `name` over `snapshots`; return the one change it made
    (applied to `live`). Experiments are off: the change is applied outright."""
    clock = FakeClock(0.0)
    controller = TuningController(LocalConfig(live), only=[name], clock=clock,
                                  experiments=ExperimentSettings(min_change=math.inf))
    made: list[Change] = []
    for values in snapshots:
        clock.advance(1.0)
        made += controller.step(TelemetrySnapshot(taken_at=clock.now, values=dict(values)))
    (change,) = made
    assert change.kind is ChangeKind.TUNED and change.applied and change.parameter == name
    assert getattr(live.current, name) == change.new
    return change


def failing(n: int) -> ScriptedWorker:
    return ScriptedWorker(script=[ProviderError("scripted", "down", status=503,
                                                retryable=True)] * n)


async def test_inference_concurrency_raised_by_the_tuner_runs_more_calls_at_once() -> None:
    """Demand above capacity: the tuner doubles concurrency, and twice as many calls run."""
    worker = GatedWorker()
    live = LiveConfig(Tunables(inference_concurrency=2))
    async with Pipeline(PipelineConfig(inference_shards=1), worker, live=live) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))) for i in range(8)]
        await settle()
        assert worker.active == 2
        change = tune(live, "inference_concurrency", {
            "requests_per_s": 100.0, "upstream_calls_per_s": 2.0, "inference_active": 2.0,
            "stage.inference.depth": 6.0, "latency_p95_ms": 1000.0})
        assert (change.old, change.new) == (2, 4)
        await settle()
        assert worker.active == 4
        worker.gate.set()
        await asyncio.gather(*calls)


async def test_queue_capacity_lowered_by_the_tuner_sheds_the_next_arrival() -> None:
    """A queue longer than the drain rate empties within the wait budget is cut; the next
    arrival is shed where it was queued before."""
    worker = GatedWorker()
    live = LiveConfig(Tunables(inference_concurrency=1, shed_threshold=1.0,
                               inference_queue_capacity=16))
    async with Pipeline(PipelineConfig(inference_shards=1), worker, live=live) as pipeline:
        calls = []
        for i in range(9):  # one running, eight queued: within 16
            calls.append(asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))))
            await settle()
        assert not any(c.done() for c in calls)
        change = tune(live, "inference_queue_capacity", {
            "requests_per_s": 1.0, "upstream_calls_per_s": 1.0, "inference_active": 1.0})
        assert (change.old, change.new) == (16, 8)
        late = asyncio.create_task(pipeline.infer(InferenceRequest("late")))
        await settle()
        with pytest.raises(Overloaded):
            await late
        worker.gate.set()
        await asyncio.gather(*calls)


async def test_shed_threshold_lowered_by_the_tuner_sheds_low_priority_earlier() -> None:
    """p95 over its objective: the tuner lowers the shed threshold, and a low-priority
    arrival that was queued at this depth before is shed now (normal priority is not)."""
    worker = GatedWorker()
    live = LiveConfig(Tunables(inference_concurrency=1, inference_queue_capacity=10,
                               shed_threshold=0.9))
    async with Pipeline(PipelineConfig(inference_shards=1), worker, live=live) as pipeline:
        calls = []
        for i in range(8):  # one running, seven queued
            calls.append(asyncio.create_task(pipeline.infer(InferenceRequest(f"r{i}"))))
            await settle()
        calls.append(asyncio.create_task(
            pipeline.infer(InferenceRequest("low-before", priority="low"))))
        await settle()
        assert not calls[-1].done()  # depth 7 < 0.9 × 10: queued
        change = tune(live, "shed_threshold", {"requests_per_s": 10.0,
                                               "latency_p95_ms": 20_000.0})
        assert change.new == pytest.approx(0.55)  # the PID's wish: the step allows ×3
        low = asyncio.create_task(pipeline.infer(InferenceRequest("low-after", priority="low")))
        normal = asyncio.create_task(pipeline.infer(InferenceRequest("normal-after")))
        await settle()
        with pytest.raises(Overloaded):  # depth 8 >= 0.55 × 10
            await low
        assert not normal.done()
        worker.gate.set()
        await asyncio.gather(*calls, normal)


async def test_breaker_threshold_lowered_by_the_tuner_opens_after_fewer_failures() -> None:
    """Most calls failing with the breaker closed: the tuner lowers the threshold from 5 to
    4, and four failures now open the breaker where they left it closed before."""
    config = PipelineConfig(cache_enabled=False)
    untuned = LiveConfig(Tunables(retry_max_attempts=1))
    tuned = LiveConfig(Tunables(retry_max_attempts=1))
    change = tune(tuned, "breaker_failure_threshold", {
        "requests_per_s": 10.0, "upstream_calls_per_s": 10.0,
        "provider.scripted.failures_per_s": 8.0, "provider.scripted.breaker_open": 0.0})
    assert (change.old, change.new) == (5, 4)
    states = []
    for live in (untuned, tuned):
        async with Pipeline(config, failing(10), live=live) as pipeline:
            for i in range(4):
                with pytest.raises(ProviderError):
                    await pipeline.infer(InferenceRequest(f"r{i}"))
            states.append(pipeline.snapshot().providers[0].breaker_state)
    assert states == ["closed", "open"]


async def test_breaker_open_time_shortened_by_the_tuner_probes_sooner() -> None:
    """A breaker that recovered at its first probe: the tuner shortens the open period from
    60 s to 42 s, and 45 s after the next trip a request goes through instead of refused."""
    change = tune(
        tuned := LiveConfig(Tunables(retry_max_attempts=1)), "breaker_open_s",
        {"upstream_calls_per_s": 1.0, "provider.scripted.breaker_open": 1.0},
        {"upstream_calls_per_s": 10.0, "provider.scripted.breaker_open": 0.0})
    assert (change.old, change.new) == (60.0, 42.0)
    outcomes = []
    for live in (LiveConfig(Tunables(retry_max_attempts=1)), tuned):
        clock = FakeClock(1000.0)
        config = PipelineConfig(cache_enabled=False)
        async with Pipeline(config, failing(5), live=live, clock=clock,
                            sleep=clock.sleep) as pipeline:
            for i in range(5):
                with pytest.raises(ProviderError):
                    await pipeline.infer(InferenceRequest(f"r{i}"))
            assert pipeline.snapshot().providers[0].breaker_state == "open"
            clock.advance(45.0)
            try:
                await pipeline.infer(InferenceRequest("probe"))
                outcomes.append("answered")
            except CircuitOpen:
                outcomes.append("refused")
    assert outcomes == ["refused", "answered"]


async def test_retry_attempts_lowered_by_the_tuner_make_fewer_upstream_calls() -> None:
    """Retries that rarely rescue a request: the tuner goes from 3 attempts to 2, and a
    failing request costs two upstream calls instead of three."""
    live = LiveConfig(Tunables())
    calls = []
    for _ in range(2):
        worker = failing(10)
        async with Pipeline(PipelineConfig(cache_enabled=False), worker, live=live,
                            sleep=FakeClock().sleep) as pipeline:
            with pytest.raises(ProviderError):
                await pipeline.infer(InferenceRequest("q"))
        calls.append(worker.calls)
        if len(calls) == 1:
            change = tune(live, "retry_max_attempts", {"retries_per_s": 10.0,
                                                       "errors_per_s": 9.0})
            assert (change.old, change.new) == (3, 2)
    assert calls == [3, 2]


async def test_retry_delay_raised_by_the_tuner_spreads_retries_further() -> None:
    """Half the attempts failing: the tuner doubles the base delay, and the backoffs the
    pipeline sleeps reach past the old ceiling (full jitter up to base × 2^(n-1))."""
    live = LiveConfig(Tunables())
    backoffs = []
    for phase in range(2):
        clock = FakeClock(1000.0)
        worker = ScriptedWorker(script=[
            ProviderError("scripted", "down", status=503, retryable=True), None] * 40)
        async with Pipeline(PipelineConfig(cache_enabled=False), worker, live=live,
                            clock=clock, sleep=clock.sleep) as pipeline:
            for i in range(40):
                await pipeline.infer(InferenceRequest(f"p{phase}-{i}"))
        backoffs.append(clock.slept_s)
        if phase == 0:
            change = tune(live, "retry_base_delay_s", {"upstream_calls_per_s": 10.0,
                                                       "provider.scripted.failures_per_s": 5.0})
            assert (change.old, change.new) == (0.5, 1.0)
    before, after = backoffs
    assert len(before) == len(after) == 40
    assert max(before) <= 0.5 < max(after) <= 1.0


async def test_rate_limit_lowered_by_the_tuner_makes_requests_wait() -> None:
    """429s on 40% of calls: the tuner cuts the rate limit from 100 to 54 req/s, and a burst
    of 100 that went straight through before now waits for the bucket."""
    live = LiveConfig(Tunables(rate_limit_rps=100.0))
    waited = []
    for phase in range(2):
        clock = FakeClock(1000.0)
        worker = ScriptedWorker()
        async with Pipeline(PipelineConfig(cache_enabled=False), worker, live=live,
                            clock=clock, sleep=clock.sleep) as pipeline:
            for i in range(100):
                await pipeline.infer(InferenceRequest(f"p{phase}-{i}"))
        assert worker.calls == 100
        waited.append(math.fsum(clock.slept_s))
        if phase == 0:
            change = tune(live, "rate_limit_rps", {
                "upstream_calls_per_s": 100.0, "provider.scripted.failures_per_s": 40.0,
                "provider.scripted.rate_limited_per_s": 40.0})
            assert (change.old, change.new) == (100.0, 54.0)
    assert waited[0] == 0.0
    assert waited[1] == pytest.approx(46 / 54, rel=0.05)


async def test_cache_ttl_shortened_by_the_tuner_expires_answers_sooner() -> None:
    """Answers reported stale: the tuner halves the cache TTL, and an answer stored after
    the change is gone 250 s later, where before it would still be served."""
    live = LiveConfig(Tunables())
    served = []
    for phase in range(2):
        clock = FakeClock(1000.0)
        async with Pipeline(PipelineConfig(), ScriptedWorker(), live=live,
                            clock=clock) as pipeline:
            await pipeline.infer(InferenceRequest("q"))
            clock.advance(250.0)
            served.append((await pipeline.infer(InferenceRequest("q"))).cached)
        if phase == 0:
            change = tune(live, "cache_ttl_s", {"feedback.stale_rate": 0.05})
            assert (change.old, change.new) == (300.0, 200.0)  # one step: at most ÷1.5
    assert served == [True, False]


def test_semantic_dedup_threshold_raised_by_the_tuner_turns_a_near_hit_into_a_miss() -> None:
    """Wrong-hit feedback above its bound: the tuner raises the similarity bar, and a prompt
    that was served a neighbour's answer just over the old bar is not served it now."""
    from intelligence.dedup import SemanticDedup
    from intelligence.embed import LexicalEmbedder

    stored, asked = "how do I reverse a list in python", "how do I reverse a list in python 3"
    probe = SemanticDedup(LexicalEmbedder(), threshold=0.0, verify=False)
    probe.insert(stored, "answer")
    hit = probe.lookup(asked)
    assert hit is not None and 0.81 < hit.similarity < 0.985, hit
    live = LiveConfig(Tunables(semantic_dedup_threshold=round(hit.similarity - 0.005, 4)))
    dedup = SemanticDedup(LexicalEmbedder(), verify=False,
                          threshold=lambda: live.current.semantic_dedup_threshold)
    dedup.insert(stored, "answer")
    assert dedup.lookup(asked) is not None
    change = tune(live, "semantic_dedup_threshold", {"semantic_dedup.wrong_hit_rate": 0.05,
                                                     "semantic_dedup.hit_rate": 0.3})
    assert change.new == pytest.approx(change.old + 0.01)
    assert dedup.lookup(asked) is None
