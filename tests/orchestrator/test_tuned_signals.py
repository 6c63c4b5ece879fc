"""The signals some tuning laws wait for, measured from real traffic and feedback: each moves
in the sampled telemetry, and the law's proposal changes because of it (a law whose signal
is absent holds).

The components' own reaction to a tuned value is in tests/orchestrator/test_tuned_parameters.py.
"""

from __future__ import annotations

import asyncio
import math

from fakeclock import FakeClock
from pipeline_fakes import ScriptedWorker

from intelligence.bridge import IntelligenceBridge
from intelligence.dedup import SemanticDedup
from intelligence.embed import LexicalEmbedder
from intelligence.semantic_hook import SemanticDedupHook
from orchestrator import (
    InferenceRequest,
    LiveConfig,
    Pipeline,
    PipelineConfig,
    Priority,
    ProviderError,
    Tunables,
)
from orchestrator.request import Completion, Usage
from self_tune.controller import TuningController
from self_tune.experiment import ExperimentSettings
from self_tune.journal import Change
from self_tune.live import LocalConfig
from self_tune.objective import Objective
from self_tune.sources import PIPELINE_COUNTERS, PipelineSource
from self_tune.telemetry import InProcessBus, Sampler, TelemetrySnapshot


def sampler_for(pipeline: Pipeline, clock: FakeClock) -> Sampler:
    """The sampler `orchestrator serve --self-tune` runs, over this pipeline, on `clock`."""
    bus: InProcessBus[TelemetrySnapshot] = InProcessBus()
    return Sampler(bus, (PipelineSource(pipeline.snapshot),), counters=PIPELINE_COUNTERS,
                   clock=clock, monotonic=clock)


def controller_for(live: LiveConfig[Tunables], name: str, clock: FakeClock) -> TuningController:
    """A controller tuning only `name`, changes applied outright (no A/B experiment)."""
    return TuningController(LocalConfig(live), only=[name], clock=clock,
                            experiments=ExperimentSettings(min_change=math.inf))


async def test_wrong_hit_feedback_is_sampled_and_raises_the_live_threshold() -> None:
    """A client's negative verdict on a semantic hit becomes `semantic_dedup.wrong_hit_rate`
    (absent before any verdict: the law holds); the controller raises the threshold the hook
    reads, and the same near pair, asked again in a fresh scope, is no longer served."""
    stored, asked = "how do I reverse a list in python", "how do I reverse a list in python 3"
    probe = SemanticDedup(LexicalEmbedder(), threshold=0.0, verify=False)
    probe.insert(stored, "answer")
    hit = probe.lookup(asked)
    assert hit is not None and 0.81 < hit.similarity < 0.985, hit
    live = LiveConfig(Tunables(semantic_dedup_threshold=round(hit.similarity - 0.005, 4)))
    hook = SemanticDedupHook(SemanticDedup(
        LexicalEmbedder(), verify=False, threshold=lambda: live.current.semantic_dedup_threshold))
    assert hook.wait_ready(30)
    bridge = IntelligenceBridge(["scripted"], learned_routing=False, dedup_hook=hook)
    clock = FakeClock(0.0)
    controller = controller_for(live, "semantic_dedup_threshold", clock)
    async with Pipeline(PipelineConfig(), ScriptedWorker(), live=live,
                        dedup_hooks=bridge.dedup_hooks) as pipeline:
        bridge.attach(pipeline)
        sampler = sampler_for(pipeline, clock)
        await pipeline.infer(InferenceRequest(stored))
        served = await pipeline.infer(InferenceRequest(asked))
        assert served.cache_kind == "semantic"
        clock.advance(5.0)
        quiet = sampler.sample()
        assert "semantic_dedup.wrong_hit_rate" not in quiet.values
        assert quiet.get("semantic_dedup.hit_rate") > 0
        assert controller.step(quiet) == []

        pipeline.feedback.record(served.request_id, -1.0, "another question's answer")
        clock.advance(5.0)
        told = sampler.sample()
        assert told.get("semantic_dedup.wrong_hit_rate") == 1.0
        (change,) = controller.step(told)
        assert change.parameter == "semantic_dedup_threshold" and change.new > change.old
        assert pipeline.snapshot().semantic_dedup["threshold"] == change.new  # type: ignore[index]

        await pipeline.infer(InferenceRequest(stored, system="a fresh scope"))
        again = await pipeline.infer(InferenceRequest(asked, system="a fresh scope"))
    assert again.cache_kind is None and again.text == asked


class OneSecondWorker:
    """Answers each call after one second of the test's clock: a provider with a fixed
    service time, so a request's latency is how long it queued plus one second."""

    name = "timed"
    default_model = "echo"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.clock.advance(1.0)
        return Completion(text="ok", usage=Usage(input_tokens=1, output_tokens=1), model="echo")

    async def aclose(self) -> None:
        return None


async def test_the_shed_law_reads_the_p95_of_the_priorities_it_protects() -> None:
    """With one call at a time, four high-priority requests are served before four low ones:
    the snapshot carries each class's p95 (`priority.high.latency_p95_ms` 4 s, low 8 s), and
    the shed law, reading the protected classes' 4 s against a 5 s objective, holds where
    the overall p95 (8 s, the low class's waits) had it shed low priority earlier."""
    clock = FakeClock(0.0)
    live = LiveConfig(Tunables(inference_concurrency=1))
    async with Pipeline(PipelineConfig(inference_shards=1), OneSecondWorker(clock), live=live,
                        clock=clock) as pipeline:
        sampler = sampler_for(pipeline, clock)
        sampler.sample()
        levels = [Priority.HIGH] * 4 + [Priority.LOW] * 4
        await asyncio.gather(*(
            pipeline.infer(InferenceRequest(f"request {i}", priority=level))
            for i, level in enumerate(levels)))
        snapshot = sampler.sample()
    assert snapshot.get("priority.high.latency_p95_ms") == 4000.0
    assert snapshot.get("priority.low.latency_p95_ms") == 8000.0
    assert snapshot.get("priority.high.completed_total") == 4
    assert snapshot.get("latency_p95_ms") == 8000.0
    overall_only = TelemetrySnapshot(taken_at=snapshot.taken_at, values={
        k: v for k, v in snapshot.values.items() if not k.startswith("priority.")})
    objective = Objective(p95_ms=5000.0)

    def proposed(seen: TelemetrySnapshot) -> list[object]:
        return TuningController(LocalConfig(live), objective=objective, only=["shed_threshold"],
                                dry_run=True, clock=FakeClock(0.0)).step(seen)

    (before,) = proposed(overall_only)
    assert before.new < before.old and "(all)" in before.reason
    assert proposed(snapshot) == []


async def test_the_rate_limit_law_waits_out_an_upstream_retry_after() -> None:
    """A 429 with `Retry-After: 30` is sampled as `provider.primary.retry_after_s` and, while
    it holds, `paused_s`: the fallback carries the calls without a 429, which alone would
    have the AIMD law raise the limit; it holds until the 30 s have passed, then raises."""
    clock = FakeClock(0.0)
    live = LiveConfig(Tunables(rate_limit_rps=10.0))
    refused = ProviderError("primary", "slow down", status=429, retryable=True,
                            retry_after_s=30.0)
    primary, fallback = ScriptedWorker("primary", [refused]), ScriptedWorker("fallback")
    async with Pipeline(PipelineConfig(), primary, fallback, live=live,
                        clock=clock) as pipeline:
        sampler = sampler_for(pipeline, clock)
        sampler.sample()

        async def interval(n: int) -> TelemetrySnapshot:
            for i in range(n):
                await pipeline.infer(InferenceRequest(f"request {clock.now} {i}"))
            clock.advance(5.0)
            return sampler.sample()

        storm = await interval(5)
        assert storm.get("provider.primary.rate_limited_per_s") > 0
        assert storm.get("provider.primary.retry_after_s") == 30.0
        assert storm.get("provider.primary.retry_after_p50_s") == 30.0
        paused = await interval(5)
        assert paused.get("provider.primary.paused_s") == 20.0
        assert paused.get("provider.fallback.calls_per_s") == 1.0
        assert paused.get("provider.primary.rate_limited_per_s") == 0.0
        clock.advance(20.0)
        passed = await interval(5)
    assert passed.get("provider.primary.paused_s") == 0.0
    assert primary.calls == 6  # the one refused, then the five after the pause

    def proposed(seen: TelemetrySnapshot) -> list[Change]:
        return TuningController(LocalConfig(live), only=["rate_limit_rps"], dry_run=True,
                                clock=FakeClock(0.0)).step(seen)

    unpaused = TelemetrySnapshot(taken_at=paused.taken_at, values={
        k: v for k, v in paused.values.items() if not k.endswith(".paused_s")})
    (would,) = proposed(unpaused)
    assert would.new > would.old
    assert proposed(paused) == []
    (raised,) = proposed(passed)
    assert raised.new > raised.old
