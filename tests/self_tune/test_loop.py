"""The watch: real pipeline telemetry through the detectors to a meta-task file."""

from __future__ import annotations

import contextlib
from pathlib import Path

from coordinator.task import parse_task_file
from orchestrator import InferenceRequest, Pipeline, PipelineConfig
from orchestrator.config import Tunables
from orchestrator.errors import ProviderError
from orchestrator.providers.base import Completion
from orchestrator.request import Usage
from self_tune.loop import SelfImprovementLoop
from self_tune.metatasks import MetaTaskGenerator
from self_tune.sources import PIPELINE_COUNTERS, PipelineSource
from self_tune.telemetry import InProcessBus, Sampler, TelemetrySnapshot

INTERVAL_S = 0.5


class FaultyUpstream:
    """Answers every request, or — once `fault_rate` is set — fails that share of them."""

    name = "faulty"
    default_model = "echo"

    def __init__(self) -> None:
        self.fault_rate = 0.0
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.calls += 1
        if (self.calls % 10) < round(self.fault_rate * 10):
            raise ProviderError(self.name, "upstream is failing", status=503, retryable=False)
        return Completion(text="ok", usage=Usage(input_tokens=5, output_tokens=1), model="echo")

    async def stream(self, request, *, timeout_s):  # pragma: no cover - not used here
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


def snapshot(values: dict[str, float], at: float = 0.0) -> TelemetrySnapshot:
    return TelemetrySnapshot(taken_at=at, values=values)


async def test_an_error_rate_jump_after_healthy_traffic_writes_a_meta_task(
    tmp_path: Path,
) -> None:
    """20 s of healthy traffic, then 30% errors: a meta-task is in the folder within 15 s."""
    now = [0.0]
    bus: InProcessBus[TelemetrySnapshot] = InProcessBus()
    subscription = bus.subscribe()
    loop = SelfImprovementLoop(MetaTaskGenerator(tmp_path, clock=lambda: now[0]),
                               clock=lambda: now[0])
    upstream = FaultyUpstream()
    # Breaker out of the way: this is about the error rate the clients see.
    tunables = Tunables(breaker_failure_threshold=1000)
    async with Pipeline(PipelineConfig(tunables=tunables), upstream) as pipeline:
        sampler = Sampler(bus, (PipelineSource(pipeline.snapshot),), counters=PIPELINE_COUNTERS,
                          interval_s=INTERVAL_S, monotonic=lambda: now[0], clock=lambda: now[0])

        async def tick(n_requests: int = 10) -> None:
            for i in range(n_requests):
                with contextlib.suppress(ProviderError):
                    await pipeline.infer(InferenceRequest(f"request {now[0]} {i}"))
            now[0] += INTERVAL_S
            sampler.sample()
            for snap in subscription.drain():
                loop.observe(snap)

        for _ in range(int(20 / INTERVAL_S)):
            await tick()
        assert list(tmp_path.glob("*.toml")) == [], "healthy traffic wrote a task"
        upstream.fault_rate = 0.3
        fault_at = now[0]
        while not list(tmp_path.glob("*.toml")) and now[0] - fault_at < 15:
            await tick()
    [written] = tmp_path.glob("*.toml")
    assert now[0] - fault_at <= 15
    [task] = parse_task_file(written)
    assert task.gate and task.created_by == "self-improve"
    assert "error_rate" in task.prompt
    assert loop.events[-1].anomaly.metric == "error_rate"


def test_unwatched_metrics_are_ignored(tmp_path: Path) -> None:
    """Only the watched metrics reach detectors; a wild value elsewhere writes nothing."""
    loop = SelfImprovementLoop(MetaTaskGenerator(tmp_path), watched=("error_rate",))
    assert loop.observe(snapshot({"something_else": 1e9, "error_rate": 0.0})) == []
    assert list(tmp_path.iterdir()) == []


def test_a_dry_run_says_what_it_would_write_and_writes_nothing(tmp_path: Path) -> None:
    """`dry_run` detects and reports, but leaves the task folder alone."""
    loop = SelfImprovementLoop(MetaTaskGenerator(tmp_path), dry_run=True)
    [event] = loop.observe(snapshot({"error_rate": 0.5}))
    assert event.proposal.written is None
    assert event.proposal.reason.startswith("dry run: would propose a task on error_rate")
    assert list(tmp_path.iterdir()) == []


def test_a_sustained_shift_is_found_by_the_statistics_without_an_objective(
    tmp_path: Path,
) -> None:
    """Past the warm-up, a level shift in latency raises an anomaly with no SLO configured."""
    loop = SelfImprovementLoop(MetaTaskGenerator(tmp_path), slos={})
    values = [100.0 + (i % 7) for i in range(300)]
    for i, value in enumerate(values):
        assert loop.observe(snapshot({"latency_p95_ms": value}, at=i)) == []
    raised = []
    for i in range(20):
        raised += loop.observe(snapshot({"latency_p95_ms": 130.0 + (i % 7)}, at=300 + i))
        if raised:
            break
    assert raised and raised[0].anomaly.metric == "latency_p95_ms"
    assert raised[0].proposal.written is not None


def test_a_lasting_breach_is_reported_when_it_begins_and_then_every_remind_s(
    tmp_path: Path,
) -> None:
    """One episode is one report (not one per sample, nor one per flicker below the limit),
    repeated every `remind_s` while it lasts; once over, the next breach is reported at once."""
    loop = SelfImprovementLoop(None, watched=("error_rate",), remind_s=60.0)
    flicker = {35: 0.0, 40: 0.0}  # two clear samples inside the episode
    reported = [t for t in range(0, 150, 5)
                if loop.observe(snapshot({"error_rate": flicker.get(t, 0.5)}, at=float(t)))]
    assert reported == [0, 60, 120]
    for t in (150.0, 155.0, 160.0):  # three clear samples end it
        assert loop.observe(snapshot({"error_rate": 0.0}, at=t)) == []
    [event] = loop.observe(snapshot({"error_rate": 0.5}, at=165.0))
    assert event.proposal.reason == "recorded (no task folder)"
