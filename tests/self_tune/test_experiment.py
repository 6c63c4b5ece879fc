"""A/B experiments: alternate slices of A and B, Welch's t-test, adopt or restore, recorded
in the agent memory and shown in status; the controller runs big changes as experiments."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest
from fakeclock import FakeClock

from memory_db import AgentMemory, ModificationOutcome
from orchestrator.config import LiveConfig, Tunables
from self_tune.controller import TuningController
from self_tune.experiment import Arm, Experiment, ExperimentSettings
from self_tune.journal import ChangeKind, MemoryJournal
from self_tune.live import LocalConfig
from self_tune.objective import Objective
from self_tune.service import SelfTuning
from self_tune.telemetry import TelemetrySnapshot

SETTINGS = ExperimentSettings(slice_s=10.0, slices=3, settle=1, alpha=0.05)


def run(experiment: Experiment, clock: FakeClock, score: object, *, seconds: float = 200.0,
        step_s: float = 1.0) -> list[Arm]:
    """Feed one score a second (from `score(arm)`) until the experiment decides; returns the
    arm in force at each sample."""
    arms = []
    while experiment.result is None and seconds > 0:
        clock.now += step_s
        seconds -= step_s
        arms.append(experiment.arm)
        experiment.observe(score(experiment.arm))  # type: ignore[operator]
    return arms


def test_slices_alternate_a_and_b_in_the_live_config() -> None:
    """Each slice puts its arm's value into the live config: A, B, A, B, … then the winner."""
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables())
    seen: list[tuple[Arm, int]] = []
    experiment = Experiment(LocalConfig(live), {"breaker_failure_threshold": 8}, reason="test",
                            settings=SETTINGS, clock=clock)

    def score(arm: Arm) -> float:
        seen.append((arm, live.current.breaker_failure_threshold))
        return 1.0 if arm is Arm.A else 0.5

    run(experiment, clock, score)
    assert {value for arm, value in seen if arm is Arm.A} == {5}
    assert {value for arm, value in seen if arm is Arm.B} == {8}
    switches = sum(1 for x, y in itertools.pairwise(seen) if x[0] != y[0])
    assert switches == 2 * SETTINGS.slices - 1


def test_a_significantly_better_b_is_adopted() -> None:
    """B with a clearly lower objective score is adopted and left in force; p < alpha."""
    clock, rng = FakeClock(0.0), random.Random(7)
    live: LiveConfig = LiveConfig(Tunables())
    experiment = Experiment(LocalConfig(live), {"retry_max_attempts": 2}, reason="test",
                            settings=SETTINGS, clock=clock)
    run(experiment, clock, lambda arm: rng.gauss(1.0 if arm is Arm.A else 0.7, 0.1))
    result = experiment.result
    assert result is not None and result.adopted
    assert result.p_value < 0.05 and result.mean_b < result.mean_a
    assert live.current.retry_max_attempts == 2
    assert "adopted B" in result.reason


def test_b_no_better_than_a_is_not_adopted_and_a_is_restored() -> None:
    """Same distribution in both arms: p stays above alpha and A is back in force."""
    clock, rng = FakeClock(0.0), random.Random(3)
    live: LiveConfig = LiveConfig(Tunables())
    experiment = Experiment(LocalConfig(live), {"retry_max_attempts": 2}, reason="test",
                            settings=SETTINGS, clock=clock)
    run(experiment, clock, lambda arm: rng.gauss(1.0, 0.1))
    result = experiment.result
    assert result is not None and not result.adopted
    assert result.p_value >= 0.05
    assert live.current.retry_max_attempts == 3


def test_a_worse_b_is_not_adopted() -> None:
    """A B that scores worse is rejected whatever its p-value in the other direction."""
    clock, rng = FakeClock(0.0), random.Random(5)
    live: LiveConfig = LiveConfig(Tunables())
    experiment = Experiment(LocalConfig(live), {"cache_ttl_s": 600.0}, reason="test",
                            settings=SETTINGS, clock=clock)
    run(experiment, clock, lambda arm: rng.gauss(1.0 if arm is Arm.A else 1.5, 0.1))
    assert experiment.result is not None and not experiment.result.adopted
    assert experiment.result.p_value > 0.5
    assert live.current.cache_ttl_s == 300.0


def test_samples_just_after_a_switch_are_not_counted() -> None:
    """`settle` samples after each switch are dropped: a lagging measurement is not B's."""
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables())
    experiment = Experiment(LocalConfig(live), {"retry_max_attempts": 2}, reason="test",
                            settings=SETTINGS, clock=clock)
    arms = run(experiment, clock, lambda arm: 1.0 if arm is Arm.A else 0.5)
    result = experiment.result
    assert result is not None
    assert result.n_a + result.n_b == len(arms) - (2 * SETTINGS.slices - 1) * SETTINGS.settle


def test_bad_experiments_and_settings_are_refused_by_name() -> None:
    """An unknown parameter, a no-op B and bad settings are ValueErrors naming the field."""
    port = LocalConfig(LiveConfig(Tunables()))
    with pytest.raises(ValueError, match="nope"):
        Experiment(port, {"nope": 1}, reason="x")
    with pytest.raises(ValueError, match="in force already"):
        Experiment(port, {"retry_max_attempts": 3}, reason="x")
    with pytest.raises(ValueError, match="alpha"):
        ExperimentSettings(alpha=1.5)
    with pytest.raises(ValueError, match="slice_s"):
        ExperimentSettings(slice_s=0)


def false_trip(threshold_fast: int, live: LiveConfig, rng: random.Random) -> TelemetrySnapshot:
    """A breaker that trips at a low failure ratio (the breaker law wants a higher threshold);
    latency is lower while the threshold is at least `threshold_fast`."""
    fast = live.current.breaker_failure_threshold >= threshold_fast
    return TelemetrySnapshot(taken_at=0.0, values={
        "requests_per_s": 10.0, "upstream_calls_per_s": 10.0, "inference_active": 1.0,
        "provider.echo.failures_per_s": 0.5, "provider.echo.breaker_opened_per_s": 0.1,
        "latency_p95_ms": rng.gauss(300.0 if fast else 900.0, 50.0),
    })


def test_the_controller_tries_a_big_change_as_an_experiment_and_records_it(
    tmp_path: Path,
) -> None:
    """A big breaker-threshold change runs as an A/B experiment (held meanwhile), is adopted
    when B scores better, and lands in the agent memory with its p-value."""
    clock, rng = FakeClock(0.0), random.Random(11)
    live: LiveConfig = LiveConfig(Tunables())
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        controller = TuningController(
            LocalConfig(live), clock=clock, only=["breaker_failure_threshold"],
            journal=MemoryJournal(memory), experiments=SETTINGS,
            objective=Objective(p95_ms=1000.0),
        )
        clock.now += 1
        assert controller.step(false_trip(7, live, rng)) == []
        assert controller.experiment is not None
        running = controller.experiment_status()["running"]
        assert running["description"] == "A/B breaker_failure_threshold 5 -> 7"
        made = []
        for _ in range(100):
            clock.now += 1
            made += controller.step(false_trip(7, live, rng))
            if controller.experiment is None:
                break
        (change,) = made
        assert change.kind is ChangeKind.EXPERIMENT and change.new == 7
        assert live.current.breaker_failure_threshold == 7
        (result,) = controller.experiment_status()["results"]
        assert result["adopted"] and result["p_value"] < 0.05
        (mod,) = memory.modifications()
        assert mod.outcome is ModificationOutcome.DEPLOYED
        assert "A/B breaker_failure_threshold 5 -> 7" in mod.description
        assert mod.metric_deltas["p_value"] < 0.05
        assert mod.metric_deltas["breaker_failure_threshold"] == 2


def test_a_rejected_experiment_is_recorded_rejected(tmp_path: Path) -> None:
    """An experiment whose B is no better restores A and is a Rejected modification."""
    clock, rng = FakeClock(0.0), random.Random(2)
    live: LiveConfig = LiveConfig(Tunables())
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        controller = TuningController(
            LocalConfig(live), clock=clock, only=["breaker_failure_threshold"],
            journal=MemoryJournal(memory), experiments=SETTINGS,
            objective=Objective(p95_ms=1000.0),
        )
        for _ in range(100):
            clock.now += 1
            controller.step(false_trip(100, live, rng))  # never faster: B does not help
            if controller.experiment_results:
                break
        (result,) = controller.experiment_results
        assert not result.adopted
        assert live.current.breaker_failure_threshold == 5
        (mod,) = memory.modifications()
        assert mod.outcome is ModificationOutcome.REJECTED


def test_small_changes_and_fast_parameters_are_not_experiments() -> None:
    """Concurrency (not marked for experiments) changes outright; so does nothing small."""
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables())
    controller = TuningController(LocalConfig(live), clock=clock, experiments=SETTINGS,
                                  only=["inference_concurrency"])
    busy = {"requests_per_s": 100.0, "upstream_calls_per_s": 64.0, "inference_active": 64.0,
            "stage.inference.depth": 200.0, "latency_p95_ms": 1000.0}
    (change,) = controller.step(TelemetrySnapshot(taken_at=0.0, values=busy))
    assert change.kind is ChangeKind.TUNED and controller.experiment is None
    off = TuningController(LocalConfig(LiveConfig(Tunables())), clock=clock,
                           only=["breaker_failure_threshold"],
                           experiments=ExperimentSettings(min_change=math.inf))
    (change,) = off.step(false_trip(7, live, random.Random(1)))
    assert change.kind is ChangeKind.TUNED


class Source:
    name = "fake"

    def __init__(self, live: LiveConfig, rng: random.Random) -> None:
        self.live, self.rng, self.calls = live, rng, 0.0

    def read(self) -> dict[str, float]:
        self.calls += 10
        snap = false_trip(7, self.live, self.rng).values
        return {**snap, "upstream_calls": self.calls, "requests_total": self.calls}


def test_the_service_shows_a_running_experiment_and_stopping_restores_a() -> None:
    """SelfTuning's status carries the running experiment; stop() aborts it, restoring A."""
    clock = FakeClock(1000.0)
    live: LiveConfig = LiveConfig(Tunables())
    service = SelfTuning([Source(live, random.Random(4))], config=LocalConfig(live),
                         clock=clock, monotonic=clock)
    assert service.controller is not None
    service.controller.experiments = SETTINGS
    for _ in range(20):
        clock.now += 1
        service.tick()
        if service.controller.experiment is not None:
            break
    running = service.status()["experiments"]["running"]
    assert running and "breaker_failure_threshold" in running["description"]
    service.stop()
    assert service.controller.experiment is None
    assert live.current.breaker_failure_threshold == 5
    (result,) = service.status()["experiments"]["results"]
    assert result["reason"].startswith("aborted") and not result["adopted"]


def test_status_lines_show_the_running_experiment_and_decisions() -> None:
    """The text panel (TUI, coordinator status) names the running trial and each decision."""
    from self_tune.experiment import status_lines

    assert status_lines(None) == ["experiments: none"]
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables())
    experiment = Experiment(LocalConfig(live), {"retry_max_attempts": 2}, reason="retries fail",
                            settings=SETTINGS, clock=clock)
    running = status_lines({"running": experiment.status(), "results": []})
    assert "running: A/B retry_max_attempts 3 -> 2 (arm a, slice 1 of 6): retries fail" in (
        running[1])
    run(experiment, clock, lambda arm: 1.0 if arm is Arm.A else 0.5)
    assert experiment.result is not None
    decided = status_lines({"running": None, "results": [experiment.result.to_dict()]})
    assert decided[1].startswith("  adopted: A/B retry_max_attempts 3 -> 2: objective 0.5 (B)")
