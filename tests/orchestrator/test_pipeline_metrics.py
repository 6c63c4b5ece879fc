"""The measurement snapshot: real numbers from real traffic."""

from __future__ import annotations

import asyncio
import json

import pytest
from fakeclock import FakeClock
from pipeline_fakes import ScriptedWorker

from orchestrator import (
    InferenceRequest,
    LiveConfig,
    Pipeline,
    PipelineConfig,
    ProviderError,
    Tunables,
)
from orchestrator.metrics import PipelineMetrics, Stage, percentile


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..100 is 50, p99 is 99, p100 is 100; an empty list gives 0."""
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 50) == 0.0


def test_window_stats_cover_the_recent_outcomes(clock: FakeClock) -> None:
    """Latency percentiles, throughput and error rate come from the recorded outcomes."""
    metrics = PipelineMetrics(window=100, clock=clock)
    for i in range(10):
        clock.advance(0.1)
        metrics.completed(latency_s=(i + 1) / 1000, now=clock())
    metrics.failed(ProviderError("p", "x", retryable=True), latency_s=1.0, now=clock())
    p50, p95, p99, throughput, error_rate = metrics.window_stats()
    assert (p50, p95, p99) == (pytest.approx(5.0), pytest.approx(10.0), pytest.approx(10.0))
    assert throughput == pytest.approx(11 / 1.0)
    assert error_rate == pytest.approx(1 / 11)
    assert metrics.errors_by_type == {"ProviderError": 1}


def test_the_window_keeps_only_the_latest_outcomes(clock: FakeClock) -> None:
    """Old outcomes leave the ring as new ones arrive."""
    metrics = PipelineMetrics(window=3, clock=clock)
    for latency_s in (9.0, 9.0, 9.0, 0.001, 0.001, 0.001):
        metrics.completed(latency_s, clock())
    assert metrics.window_stats()[2] == pytest.approx(1.0)


async def test_snapshot_reports_stages_providers_and_traffic() -> None:
    """After traffic the snapshot shows every stage, each provider, counts and latencies."""
    failing = ProviderError("scripted", "bad", status=400, retryable=False)
    worker = ScriptedWorker(script=[failing])
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        with pytest.raises(ProviderError):
            await pipeline.infer(InferenceRequest("bad"))
        await asyncio.gather(*(pipeline.infer(InferenceRequest(f"q{i % 5}")) for i in range(20)))
        snapshot = pipeline.snapshot()
    assert [s.name for s in snapshot.stages] == list(Stage) == [
        "rag",
        "assemble",
        "inference",
        "postprocess",
        "stream",
    ]
    # Every stage saw the answered requests pass (the inference stage's sharded queues too).
    assert all(s.latency_p99_ms > 0 for s in snapshot.stages), snapshot.stages
    assert [s.capacity for s in snapshot.stages] == [512, 512, 1024, 256, 256]
    assert snapshot.providers[0].name == "scripted"
    assert snapshot.requests_total == 21 and snapshot.completed_total == 20
    assert snapshot.errors_total == 1 and snapshot.error_rate == pytest.approx(1 / 21)
    assert snapshot.dedup_hits == 15 and snapshot.upstream_calls == 6
    assert snapshot.latency_p50_ms > 0 and snapshot.latency_p99_ms >= snapshot.latency_p50_ms
    assert snapshot.throughput_rps > 0
    assert snapshot.in_flight == 0


async def test_snapshot_to_dict_is_json_ready() -> None:
    """`to_dict` gives plain data that json can encode."""
    async with Pipeline(PipelineConfig(), ScriptedWorker()) as pipeline:
        await pipeline.infer(InferenceRequest("q"))
        data = pipeline.snapshot().to_dict()
    decoded = json.loads(json.dumps(data))
    assert decoded["stages"][0]["name"] == "rag"
    assert decoded["providers"][0]["breaker_state"] == "closed"


async def test_provider_failures_are_counted_by_class(clock: FakeClock) -> None:
    """A 429, a timeout and a 503 are each a failure; the 429 and the timeout are also
    counted apart (the rate limit's tuner follows 429s only); a 503 is none of the classes."""
    script: list[BaseException | None] = [
        ProviderError("scripted", "slow down", status=429, retryable=True, retry_after_s=0.1),
        TimeoutError(),
        ProviderError("scripted", "down", status=503, retryable=True),
    ]
    worker = ScriptedWorker(script=script)
    live = LiveConfig(Tunables(retry_max_attempts=4))
    async with Pipeline(PipelineConfig(cache_enabled=False), worker, live=live, clock=clock,
                        sleep=clock.sleep) as pipeline:
        await pipeline.infer(InferenceRequest("q"))
        (provider,) = pipeline.snapshot().providers
    assert (provider.calls_total, provider.failures_total) == (4, 3)
    assert (provider.rate_limited_total, provider.timeouts_total) == (1, 1)
    assert provider.rejected_total == 0


async def test_a_rejected_request_is_counted_apart_from_provider_faults(
    clock: FakeClock,
) -> None:
    """A 400 is a failure of the request, not of the provider: `rejected_total` counts it."""
    worker = ScriptedWorker(script=[ProviderError("scripted", "bad", status=400,
                                                  retryable=False)])
    async with Pipeline(PipelineConfig(cache_enabled=False), worker, clock=clock,
                        sleep=clock.sleep) as pipeline:
        with pytest.raises(ProviderError):
            await pipeline.infer(InferenceRequest("q"))
        (provider,) = pipeline.snapshot().providers
    assert (provider.failures_total, provider.rejected_total, provider.timeouts_total) == (
        1, 1, 0)
