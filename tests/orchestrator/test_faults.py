"""The fault schedule: injected upstream failures at exact shares, by calls or by time."""

from __future__ import annotations

import asyncio

import pytest
from fakeclock import FakeClock

from orchestrator.assembly import build_pipeline
from orchestrator.config import PipelineConfig, Tunables
from orchestrator.errors import ProviderError, SettingsError
from orchestrator.providers.echo import EchoWorker
from orchestrator.providers.faults import FaultSchedule
from orchestrator.request import InferenceRequest
from orchestrator.settings import ServerSettings


def failures(schedule: FaultSchedule, calls: int) -> list[int]:
    failed = []
    for n in range(1, calls + 1):
        try:
            schedule.check("echo")
        except ProviderError as exc:
            assert exc.retryable and exc.status == 503
            failed.append(n)
    return failed


def test_a_call_count_phase_fails_exactly_its_share_of_calls() -> None:
    """"100:0.3, 200:0": calls 101-200 fail 3 in 10, evenly; before and after, none."""
    failed = failures(FaultSchedule.parse("100:0.3, 200:0"), 300)
    assert len(failed) == 30
    assert min(failed) > 100 and max(failed) <= 200
    assert all(len([f for f in failed if lo < f <= lo + 10]) == 3 for lo in range(100, 200, 10))


def test_a_time_phase_starts_when_its_time_has_passed() -> None:
    """"20s:0.5": nothing fails for 20 s, then every second call does."""
    clock = FakeClock(1000.0)
    schedule = FaultSchedule.parse("20s:0.5", clock=clock)
    assert failures(schedule, 50) == []
    clock.advance(20.0)
    assert len(failures(schedule, 10)) == 5


@pytest.mark.parametrize("text", ["", "x:0.3", "10:1.5", "10", "-1:0.2", "10:0.2, 5s:0.1"])
def test_a_malformed_schedule_is_refused_with_the_phase_at_fault(text: str) -> None:
    with pytest.raises(ValueError):
        FaultSchedule.parse(text)


def test_echo_faults_setting_is_validated_by_name() -> None:
    with pytest.raises(SettingsError, match="ECHO_FAULTS"):
        ServerSettings(provider="echo", echo_faults="soon:0.3")


def test_the_echo_provider_fails_as_scheduled_and_the_pipeline_counts_it() -> None:
    """Through the pipeline, injected faults are upstream failures the retries absorb."""
    async def run() -> tuple[int, int]:
        config = PipelineConfig(tunables=Tunables(retry_base_delay_s=0.0))
        pipeline = build_pipeline(ServerSettings(provider="echo", echo_faults="0:0.5"), config)
        async with pipeline:
            for n in range(20):
                await pipeline.infer(InferenceRequest(prompt=f"distinct prompt {n}"))
            snap = pipeline.snapshot()
        provider = next(p for p in snap.providers if p.name == "echo")
        return provider.calls_total, provider.failures_total

    calls, failed = asyncio.run(run())
    assert failed >= 10 and calls == 20 + failed  # every failure was retried and then answered


def test_echo_worker_takes_a_schedule() -> None:
    worker = EchoWorker(faults=FaultSchedule.parse("0:1"))

    async def call() -> None:
        await worker.complete(InferenceRequest(prompt="hi"), timeout_s=5.0)

    with pytest.raises(ProviderError, match="injected fault"):
        asyncio.run(call())
