"""`SelfTuning`: real pipeline traffic moves the telemetry, the watch sees a failing upstream,
and a parameter held at its bound becomes a meta-task."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from fakeclock import FakeClock

from coordinator.task import parse_task_file
from orchestrator.assembly import build_pipeline
from orchestrator.config import LiveConfig, PipelineConfig, Tunables
from orchestrator.request import InferenceRequest
from orchestrator.settings import ServerSettings
from self_tune.live import LocalConfig
from self_tune.metatasks import MetaTaskGenerator
from self_tune.params import parameter
from self_tune.service import PINNED_WINDOWS, SelfTuning
from self_tune.sources import PipelineSource


def test_traffic_moves_the_snapshot_and_a_failing_upstream_is_an_anomaly() -> None:
    """Healthy traffic, then an upstream failing half its calls (retries hide it from the
    requests): the sampled rates move with the traffic and the watch raises a Critical
    `upstream_error_rate`, while the controller tunes the live pipeline."""
    clock = FakeClock()

    async def run() -> SelfTuning:
        config = PipelineConfig(tunables=Tunables(retry_base_delay_s=0.0))
        pipeline = build_pipeline(ServerSettings(provider="echo", echo_faults="30:0.5"), config)
        tuning = SelfTuning([PipelineSource(pipeline.snapshot)],
                            config=LocalConfig(pipeline.live), clock=clock, monotonic=clock)
        async with pipeline:
            sent = 0
            for _ in range(6):
                for _ in range(10):
                    await pipeline.infer(InferenceRequest(prompt=f"request {sent}"))
                    sent += 1
                clock.advance(1.0)
                tuning.tick()
            return tuning

    tuning = asyncio.run(run())
    status = tuning.status()
    assert status["ticks"] == 6 and status["tuning"] == "on"
    [anomaly] = [a for a in status["anomalies"] if a["metric"] == "upstream_error_rate"][:1]
    assert anomaly["severity"] == "Critical" and anomaly["value"] >= 0.3
    assert anomaly["action"] == "recorded (no task folder)"
    assert not [a for a in status["anomalies"] if a["metric"] == "error_rate"]  # retries held


class Idle:
    name = "idle"

    def read(self) -> dict[str, float]:
        return {"requests_total": 0.0}


def test_a_parameter_held_at_its_bound_becomes_one_meta_task(tmp_path: Path) -> None:
    live = LiveConfig(Tunables())
    clock = FakeClock()
    tuning = SelfTuning([Idle()], config=LocalConfig(live), generator=MetaTaskGenerator(
        tmp_path, clock=clock), clock=clock, monotonic=clock)
    bound = int(parameter("breaker_failure_threshold").high)
    live.set(breaker_failure_threshold=bound)  # where a controller pushed it
    for _ in range(PINNED_WINDOWS * 2):
        clock.advance(10.0)
        tuning.tick()
    [pinned] = tuning.status()["pinned"]
    assert pinned["parameter"] == "breaker_failure_threshold" and pinned["bound"] == "upper"
    [written] = tmp_path.glob("*.toml")
    [task] = parse_task_file(written)
    assert task.id == pinned["task_id"] and task.gate and task.created_by == "self-improve"
    assert "breaker_failure_threshold" in task.prompt and "upper bound" in task.prompt


def test_without_a_live_config_it_detects_and_says_it_does_not_tune() -> None:
    tuning = SelfTuning([Idle()])
    tuning.tick()
    assert tuning.status()["tuning"] == "off: no live config"
    assert tuning.status()["parameters"] == []


def test_stopped_without_closing_it_starts_again() -> None:
    """A leader that stepped down (`stop(close=False)`) and leads again runs rounds again."""
    ticked = threading.Event()
    tuning = SelfTuning([Idle()], interval_s=0.01, on_tick=ticked.set)
    tuning.start()
    assert ticked.wait(10)
    tuning.stop(close=False)
    ticks = tuning.ticks
    ticked.clear()
    tuning.start()
    assert ticked.wait(10)
    tuning.stop()
    assert tuning.ticks > ticks
