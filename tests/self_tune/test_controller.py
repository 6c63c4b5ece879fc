"""The tuning controller: bounds, step limits, cooldowns, dry runs, the change log, rollback,
the journal in the agent memory, and the forecast's feed-forward."""

from __future__ import annotations

from typing import Any

import pytest
from fakeclock import FakeClock

from memory_db import AgentMemory, ModificationOutcome
from orchestrator.config import LiveConfig, Tunables
from self_tune.controller import TuningController
from self_tune.errors import ConfigUpdateRejected
from self_tune.journal import ChangeKind, MemoryJournal
from self_tune.live import LocalConfig
from self_tune.objective import Objective
from self_tune.params import PARAMETERS, parameter
from self_tune.snapshots import SnapshotStore
from self_tune.telemetry import TelemetrySnapshot


def snap(t: float = 0.0, **values: float) -> TelemetrySnapshot:
    return TelemetrySnapshot(taken_at=t, values=values)


def busy(**extra: float) -> dict[str, float]:
    """A pipeline with demand for more slots than it has: 100 req/s, 1 s calls, queueing."""
    base = {
        "requests_per_s": 100.0,
        "upstream_calls_per_s": 64.0,
        "inference_active": 64.0,
        "stage.inference.depth": 200.0,
        "latency_p95_ms": 1000.0,
    }
    base.update(extra)
    return base


def make(clock: FakeClock, **kw: Any) -> tuple[TuningController, LiveConfig]:
    live: LiveConfig = LiveConfig(Tunables())
    controller = TuningController(
        LocalConfig(live), clock=clock, only=kw.pop("only", ["inference_concurrency"]), **kw
    )
    return controller, live


def test_the_twelve_parameters_are_declared_once() -> None:
    """PARAMETERS names the twelve tuned parameters, each with signal, setpoint and why."""
    names = [p.name for p in PARAMETERS]
    assert len(names) == 12 == len(set(names))
    assert set(names) == {
        "inference_concurrency", "inference_queue_capacity", "shed_threshold",
        "breaker_failure_threshold", "breaker_open_s", "retry_max_attempts",
        "retry_base_delay_s", "rate_limit_rps", "semantic_dedup_threshold", "cache_ttl_s",
        "agents", "lease_s",
    }
    for p in PARAMETERS:
        assert p.signal and p.setpoint and p.why, p.name


def test_unknown_parameter_lookup_names_it() -> None:
    """parameter('nope') is a KeyError naming it."""
    with pytest.raises(KeyError, match="nope"):
        parameter("nope")


def test_a_change_is_applied_to_the_live_config_with_its_reason() -> None:
    """Demand above capacity raises concurrency in the live config, and the change says why."""
    clock = FakeClock(0.0)
    controller, live = make(clock)
    changes = controller.step(snap(**busy()))
    assert len(changes) == 1
    change = changes[0]
    assert change.parameter == "inference_concurrency"
    assert change.old == 64 and change.new == live.current.inference_concurrency > 64
    assert "Little's law" in change.reason
    assert change.kind is ChangeKind.TUNED and change.applied


def test_one_step_is_limited_to_the_parameters_max_step() -> None:
    """However large the wish, one change at most doubles concurrency (max_step 1.0)."""
    clock = FakeClock(0.0)
    controller, live = make(clock)
    controller.step(snap(**busy(requests_per_s=10_000.0)))
    assert live.current.inference_concurrency == 128


def test_bounds_hold_the_value() -> None:
    """The tuner's bounds cap a parameter however often it is pushed."""
    clock = FakeClock(0.0)
    controller, live = make(clock)
    for _ in range(20):
        clock.now += 10
        controller.step(snap(**busy(requests_per_s=1e6)))
    assert live.current.inference_concurrency == parameter("inference_concurrency").high


def test_cooldown_blocks_a_second_change_too_soon() -> None:
    """A parameter changed at t=0 is not changed again before its cooldown passes."""
    clock = FakeClock(0.0)
    controller, _ = make(clock)
    controller.step(snap(**busy(requests_per_s=10_000.0)))
    clock.now = parameter("inference_concurrency").cooldown_s / 2
    assert controller.step(snap(**busy(requests_per_s=10_000.0))) == []
    clock.now = parameter("inference_concurrency").cooldown_s
    assert controller.step(snap(**busy(requests_per_s=10_000.0)))


def test_dry_run_recommends_without_acting() -> None:
    """With dry_run the live config stays put and the change is a recommendation."""
    clock = FakeClock(0.0)
    controller, live = make(clock, dry_run=True)
    changes = controller.step(snap(**busy()))
    assert changes and changes[0].kind is ChangeKind.RECOMMENDED and not changes[0].applied
    assert live.current.inference_concurrency == 64


def test_no_signal_no_change() -> None:
    """A law without its signal proposes nothing: an empty snapshot changes nothing."""
    clock = FakeClock(0.0)
    controller, live = make(clock, only=None)
    assert controller.step(snap()) == []
    assert live.current == Tunables()


def test_forecast_feeds_forward_into_concurrency() -> None:
    """A forecast of more demand than measured raises concurrency before arrivals do."""
    clock = FakeClock(0.0)
    quiet = busy(requests_per_s=20.0, upstream_calls_per_s=20.0, inference_active=20.0)
    quiet["stage.inference.depth"] = 0.0
    without, live_a = make(clock)
    with_forecast, live_b = make(clock, forecast=lambda: 100.0)
    without.step(snap(**quiet))
    changes = with_forecast.step(snap(**quiet))
    assert live_a.current.inference_concurrency == 64
    assert live_b.current.inference_concurrency > 64
    assert "forecast" in changes[0].reason


def test_a_refused_change_is_logged_and_the_rest_apply() -> None:
    """A port that refuses one field still gets the others applied."""

    class Picky(LocalConfig):
        def apply(self, changes: Any) -> Any:
            if "shed_threshold" in changes:
                raise ConfigUpdateRejected("shed_threshold", "no")
            return super().apply(changes)

    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables())
    controller = TuningController(
        Picky(live), clock=clock, only=["inference_concurrency", "shed_threshold"]
    )
    values = busy(latency_p95_ms=30_000.0)
    changes = controller.step(snap(**values))
    assert [c.parameter for c in changes] == ["inference_concurrency"]
    assert live.current.shed_threshold == 0.9


def test_status_shows_value_default_and_last_change() -> None:
    """status() lists each parameter with its value, its default and the last change."""
    clock = FakeClock(0.0)
    controller, _ = make(clock)
    controller.step(snap(**busy()))
    (row,) = controller.status()
    assert row["name"] == "inference_concurrency"
    assert row["default"] == 64 and row["value"] > 64
    assert row["last_change"]["reason"]


def test_a_change_that_makes_things_worse_is_rolled_back() -> None:
    """A version that scores worse than before it, under the same conditions, is undone."""
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables())
    store = SnapshotStore(window_s=30, min_age_s=0)
    controller = TuningController(
        LocalConfig(live), clock=clock, only=["shed_threshold"], store=store,
        objective=Objective(p95_ms=1000.0),
    )
    steady = {"requests_per_s": 50.0, "upstream_calls_per_s": 50.0, "inference_active": 25.0}
    for _ in range(5):
        clock.now += 1
        controller.step(snap(latency_p95_ms=900.0, **steady))
    clock.now += 1
    (change,) = controller.step(snap(latency_p95_ms=2500.0, **steady))  # PID sheds earlier
    assert change.parameter == "shed_threshold" and live.current.shed_threshold < 0.9
    rollbacks = []
    for _ in range(40):
        clock.now += 1
        rollbacks += [
            c
            for c in controller.step(snap(latency_p95_ms=2500.0, **steady))
            if c.kind is ChangeKind.ROLLED_BACK
        ]
    assert rollbacks and rollbacks[0].new == 0.9
    assert "rollback to v1" in rollbacks[0].reason


def test_no_rollback_when_conditions_changed() -> None:
    """A version that ran under very different demand is not judged (nor rolled back)."""
    store = SnapshotStore(window_s=10, min_age_s=0)
    for t in range(3):
        store.observe(1.0, t, {"arrivals_per_s": 50.0})
    store.save({"x": 1}, 3)
    store.save({"x": 2}, 4)
    verdicts = [store.observe(5.0, 5 + t, {"arrivals_per_s": 150.0}) for t in range(15)]
    assert verdicts == [None] * 15
    assert store.incomparable == 1


def test_changes_and_versions_are_kept_in_the_agent_memory(tmp_path: Any) -> None:
    """Applied changes become Deployed modifications; versions become config snapshots."""
    clock = FakeClock(0.0)
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        journal = MemoryJournal(memory)
        live: LiveConfig = LiveConfig(Tunables())
        controller = TuningController(
            LocalConfig(live), clock=clock, only=["inference_concurrency"], journal=journal,
            store=SnapshotStore(journal=journal),
        )
        controller.step(snap(**busy()))
        (mod,) = memory.modifications()
        assert mod.outcome is ModificationOutcome.DEPLOYED
        assert "inference_concurrency 64 ->" in mod.description
        assert mod.metric_deltas["inference_concurrency"] > 0
        labels = [s.label for s in memory.config_snapshots()]
        assert labels == ["self_tune v2", "self_tune v1"]


def test_rate_limit_halves_on_429s_but_not_on_503s() -> None:
    """AIMD on backpressure only: a burst of 429s lowers the limit; as many 503s do not."""
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables(rate_limit_rps=100.0))
    controller = TuningController(LocalConfig(live), clock=clock, only=["rate_limit_rps"])
    calls = {"requests_per_s": 100.0, "upstream_calls_per_s": 100.0, "inference_active": 10.0}
    below = {**calls, "upstream_calls_per_s": 50.0}  # the limit is not what holds calls back
    (unavailable,) = controller.step(snap(**below, **{"provider.a.failures_per_s": 40.0}))
    assert unavailable.new == live.current.rate_limit_rps == 110.0  # no 429s: probe upward
    clock.now += 10
    (change,) = controller.step(snap(**calls, **{"provider.a.failures_per_s": 40.0,
                                                 "provider.a.rate_limited_per_s": 40.0}))
    # 90% of the 60 calls/s accepted, held to half the limit in one step
    assert change.new == live.current.rate_limit_rps == 55.0
    assert "40% of 100 calls/s got 429" in change.reason


def test_rate_limit_doubles_while_it_is_what_holds_calls_back() -> None:
    """After a storm of 429s the limit sits far below what the provider serves again; while
    calls run at the limit and none is refused it doubles (slow start), and once demand no
    longer reaches it, it probes up by 10% only."""
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables(rate_limit_rps=4.0))
    controller = TuningController(LocalConfig(live), clock=clock, only=["rate_limit_rps"])
    seen = []
    for _ in range(6):
        calls = min(60.0, live.current.rate_limit_rps)  # demand is 60/s
        controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=calls,
                             inference_active=10.0))
        seen.append(live.current.rate_limit_rps)
        clock.now += 10
    assert seen == [8.0, 16.0, 32.0, 64.0, 128.0, pytest.approx(140.8)]


def test_a_real_pipeline_reports_429s_apart_from_other_failures() -> None:
    """The sampler turns each provider's rate_limited_total into a rate the law reads."""
    from self_tune.sources import PIPELINE_COUNTERS

    assert "provider.*.rate_limited_total" in PIPELINE_COUNTERS


def test_a_changes_record_carries_its_metric_before_and_after(tmp_path: Any) -> None:
    """The memory's record of a change gets the objective and the parameter's own metric
    (concurrency: p95 latency) averaged before the change and while it was in force."""
    clock = FakeClock(0.0)
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        live: LiveConfig = LiveConfig(Tunables())
        controller = TuningController(
            LocalConfig(live), clock=clock, only=["inference_concurrency"],
            journal=MemoryJournal(memory), objective=Objective(p95_ms=1000.0),
            store=SnapshotStore(window_s=10.0),
        )
        (change,) = controller.step(snap(**busy()))  # p95 1000 ms before
        for _ in range(12):  # the change holds; p95 falls to 400 ms
            clock.now += 1
            controller.step(snap(**busy(latency_p95_ms=400.0, **{"stage.inference.depth": 0})))
        (mod, *_) = sorted(memory.modifications(), key=lambda m: m.mod_id)
        deltas = mod.metric_deltas
        assert deltas["latency_p95_ms.before"] == 1000.0
        assert deltas["latency_p95_ms.after"] == 400.0
        assert deltas["latency_p95_ms.delta"] == -600.0
        assert deltas["objective.delta"] < 0
        assert deltas["inference_concurrency"] == change.new - change.old


def test_every_parameter_names_the_metric_it_aims_at() -> None:
    """Each of the twelve says which telemetry metric its changes are measured on."""
    for p in PARAMETERS:
        assert p.metric, p.name
