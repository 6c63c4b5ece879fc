"""429s are backpressure, not faults; a client that retries by itself gets no stacked retries;
what a request costs (echo is free, unpriced models are counted)."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock
from pipeline_fakes import ScriptedWorker

from orchestrator import (
    EchoWorker,
    InferenceRequest,
    Pipeline,
    PipelineConfig,
    ProviderError,
    Tunables,
)
from orchestrator.resilience.breaker import BreakerState


def _rate_limited(retry_after_s: float | None = 2.0) -> ProviderError:
    return ProviderError(
        "scripted", "rate limited", status=429, retryable=True, retry_after_s=retry_after_s
    )


def _config(**tunables: object) -> PipelineConfig:
    return PipelineConfig(tunables=Tunables(**tunables), cache_enabled=False, seed=1)  # type: ignore[arg-type]


async def test_429s_never_open_the_breaker(clock: FakeClock) -> None:
    """Nine 429s in a row (threshold five) leave the breaker closed; the request is answered."""
    worker = ScriptedWorker(script=[_rate_limited(0.1)] * 9)
    config = _config(retry_max_attempts=10, breaker_failure_threshold=5)
    async with Pipeline(config, worker, clock=clock, sleep=clock.sleep) as pipeline:
        response = await pipeline.infer(InferenceRequest("q", timeout_s=1000))
        route = pipeline.routes[0]
        snapshot = pipeline.snapshot()
    assert response.text == "q"
    assert route.breaker.state is BreakerState.CLOSED
    assert route.breaker.opened_total == 0
    assert snapshot.providers[0].rate_limited_total == 9


async def test_a_429_pauses_the_provider_for_its_retry_after(clock: FakeClock) -> None:
    """After a 429 with Retry-After: 2 the provider is paused: the retry waits at least 2 s."""
    worker = ScriptedWorker(script=[_rate_limited(2.0)])
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        start = clock()
        await pipeline.infer(InferenceRequest("q"))
        assert clock() - start >= 2.0 - 1e-9
        assert pipeline.routes[0].limiter.paused_s == 0.0
    assert worker.calls == 2


async def test_a_429_without_retry_after_still_waits_a_second(clock: FakeClock) -> None:
    """A bare 429 pauses the provider for a second before the retry."""
    worker = ScriptedWorker(script=[_rate_limited(None)])
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        await pipeline.infer(InferenceRequest("q"))
    assert worker.calls == 2
    assert sum(clock.slept_s) >= 1.0 - 1e-9


async def test_a_client_that_retries_itself_gets_one_try(clock: FakeClock) -> None:
    """With `client_retries` a retryable failure goes straight back (the client retries)."""
    worker = ScriptedWorker(script=[_rate_limited(3.0)] * 5)
    async with Pipeline(_config(), worker, clock=clock, sleep=clock.sleep) as pipeline:
        with pytest.raises(ProviderError) as info:
            await pipeline.infer(InferenceRequest("q", client_retries=True))
    assert info.value.status == 429 and info.value.retry_after_s == 3.0
    assert worker.calls == 1 and clock.slept_s == []


async def test_echo_costs_nothing_whatever_model_a_request_names() -> None:
    """A request to the echo provider naming a priced model costs $0 and is not 'unpriced'."""
    async with Pipeline(PipelineConfig(global_budget_usd=0.01), EchoWorker()) as pipeline:
        response = await pipeline.infer(
            InferenceRequest("word " * 5000, model="claude-opus-5-5", max_tokens=10)
        )
        snapshot = pipeline.snapshot()
    assert response.cost_usd == 0.0
    assert snapshot.cost_usd_total == 0.0 and snapshot.unpriced_models == {}


async def test_an_unpriced_model_shows_in_the_snapshot() -> None:
    """Answers billed for a model without a price are counted per model in the snapshot."""
    worker = ScriptedWorker(model="mystery-9")
    async with Pipeline(_config(), worker) as pipeline:
        await pipeline.infer(InferenceRequest("q"))
        snapshot = pipeline.snapshot()
    assert snapshot.unpriced_models == {"mystery-9": 1}
    assert snapshot.to_dict()["unpriced_models"] == {"mystery-9": 1}
