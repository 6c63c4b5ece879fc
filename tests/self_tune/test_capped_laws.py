"""The laws under a capped call rate (our rate limit, the upstream's 429s): what made a
storm of 429s take 68 simulated seconds to recover from in benchmarks/tuning.py."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from orchestrator.config import LiveConfig, Tunables
from self_tune.controller import TuningController
from self_tune.live import LocalConfig
from self_tune.telemetry import TelemetrySnapshot


def snap(**values: float) -> TelemetrySnapshot:
    return TelemetrySnapshot(taken_at=0.0, values=values)


def tuner(only: str, **tunables: object) -> tuple[TuningController, LiveConfig, FakeClock]:
    clock = FakeClock(0.0)
    live: LiveConfig = LiveConfig(Tunables(**tunables))  # type: ignore[arg-type]
    controller = TuningController(LocalConfig(live), clock=clock, only=[only])
    return controller, live, clock


def test_slots_waiting_for_the_rate_limit_are_not_a_slower_provider() -> None:
    """Calls run at the 20 req/s limit; slots held 6× longer are calls waiting for a token.
    Little's law on that call time asked for more slots (more waiting, a run-away to 1024);
    the capped law cuts to what 20 req/s needs at the no-load call time."""
    controller, live, clock = tuner("inference_concurrency", rate_limit_rps=20.0,
                                    inference_concurrency=32)
    quiet = {"requests_per_s": 20.0, "upstream_calls_per_s": 20.0, "inference_active": 10.0}
    controller.step(snap(**quiet))  # no-load: 0.5 s a call
    assert live.current.inference_concurrency == 32
    clock.now += 10
    (change,) = controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=20.0,
                                     inference_active=32.0, **{"stage.inference.depth": 50.0}))
    assert live.current.inference_concurrency == 16  # halved (the step limit) toward 13
    assert "rate limit 20 req/s" in change.reason
    clock.now += 10
    controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=20.0,
                         inference_active=16.0, **{"stage.inference.depth": 80.0}))
    assert live.current.inference_concurrency == 16  # 13 needed: close enough, held


def test_after_a_burst_of_429s_the_limit_probes_before_it_doubles() -> None:
    """The storm is still on: calls at the cut limit get no 429s. Slow start would double
    into the storm at once (a 4 s saw-tooth between half and twice the upstream's limit);
    near the ceiling it probes by 10%, and doubles once it is past it without a 429."""
    controller, live, clock = tuner("rate_limit_rps", rate_limit_rps=100.0)
    controller.step(snap(requests_per_s=100.0, upstream_calls_per_s=100.0,
                         inference_active=10.0, **{"provider.a.rate_limited_per_s": 40.0}))
    assert live.current.rate_limit_rps == 54.0  # 90% of the 60 req/s accepted: the ceiling
    seen = []
    for _ in range(5):
        clock.now += 10
        limit = live.current.rate_limit_rps
        controller.step(snap(requests_per_s=100.0, upstream_calls_per_s=limit,
                             inference_active=10.0))
        seen.append(live.current.rate_limit_rps)
    # On main: [108, 216, …] at once, into the storm.
    assert seen == pytest.approx([59.4, 65.34, 71.874, 79.0614, 158.123], rel=1e-4)


def test_a_storm_paused_by_retry_after_halves_the_rate_attempted_before_it() -> None:
    """60 calls/s go through; then the first 429s pause every call for their Retry-After, so
    the interval they land in attempts 3 calls/s, two of them refused. Halving that interval's
    rate cut the limit to 1.5/s against an upstream accepting 30/s (10 s of slow start while
    the queue grew: benchmarks/tuning.py's storm took 34 s to recover); the cut is to half
    the rate attempted just before, as TCP halves the window it was sending at."""
    controller, live, clock = tuner("rate_limit_rps")
    controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=60.0, inference_active=30.0))
    clock.now += 1
    (change,) = controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=3.0,
                                     inference_active=30.0,
                                     **{"provider.a.rate_limited_per_s": 2.0}))
    assert live.current.rate_limit_rps == pytest.approx(30.0)
    assert "up to 60 calls/s" in change.reason


def test_low_priority_is_shed_as_soon_as_arrivals_outrun_the_cap() -> None:
    """Twice what the upstream accepts arrives. p95 is still fine, but the queue will fill and
    low priority, served last, would wait in it to its deadline: the threshold drops to the
    floor at once; when the overload ends, it relaxes."""
    controller, live, clock = tuner("shed_threshold")
    (change,) = controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=42.0,
                                     inference_active=20.0, latency_p95_ms=800.0,
                                     **{"provider.a.rate_limited_per_s": 12.0}))
    assert live.current.shed_threshold == pytest.approx(0.3)
    assert "shed low priority" in change.reason
    clock.now += 10
    controller.step(snap(requests_per_s=60.0, upstream_calls_per_s=60.0, inference_active=20.0,
                         latency_p95_ms=800.0))
    assert live.current.shed_threshold == pytest.approx(0.9)


def test_a_full_queue_sheds_low_priority_before_p95_shows_it() -> None:
    """Arrivals turned away by a full queue (p95 still within): shed low priority earlier."""
    controller, live, _ = tuner("shed_threshold")
    controller.step(snap(requests_per_s=60.0, shed_per_s=20.0, upstream_calls_per_s=40.0,
                         inference_active=20.0, latency_p95_ms=800.0,
                         **{"stage.inference.depth": 100.0}))
    assert live.current.shed_threshold < 0.9


def test_the_queue_drains_at_what_the_upstream_accepts() -> None:
    """Half the 100 attempts/s are refused: the queue holds 2.5 s of the 50/s accepted."""
    controller, live, _ = tuner("inference_queue_capacity", inference_queue_capacity=250)
    controller.step(snap(requests_per_s=100.0, upstream_calls_per_s=100.0,
                         inference_active=20.0, latency_p95_ms=1000.0,
                         **{"provider.a.rate_limited_per_s": 50.0}))
    # objective p95 10 s: budget 5 s × 50/s
    assert live.current.inference_queue_capacity == 250
    controller2, live2, _ = tuner("inference_queue_capacity", inference_queue_capacity=400)
    controller2.step(snap(requests_per_s=100.0, upstream_calls_per_s=100.0,
                          inference_active=20.0, latency_p95_ms=1000.0,
                          **{"provider.a.rate_limited_per_s": 50.0}))
    assert live2.current.inference_queue_capacity == 250  # not 400 (100/s × 5 s = 500)


def test_a_full_priority_queue_with_p95_near_the_objective_is_shortened() -> None:
    """Depth ÷ drain is 5 s, within the budget, but the lower priorities wait behind every
    higher arrival: p95 at 80% of the objective with the queue full shrinks the budget."""
    controller, live, clock = tuner("inference_queue_capacity", inference_queue_capacity=200)
    full = {"requests_per_s": 60.0, "upstream_calls_per_s": 40.0, "inference_active": 20.0,
            "latency_p95_ms": 8000.0, "stage.inference.depth": 200.0}
    for _ in range(3):
        controller.step(snap(**full))
        clock.now += 10
    assert live.current.inference_queue_capacity < 200
    calm = {**full, "latency_p95_ms": 1000.0, "stage.inference.depth": 0.0}
    shrunk = live.current.inference_queue_capacity
    for _ in range(10):
        controller.step(snap(**calm, shed_per_s=5.0))
        clock.now += 10
    assert live.current.inference_queue_capacity > shrunk



def test_requests_shed_at_the_door_are_not_retries_that_failed() -> None:
    """10 retries/s, 2 requests/s failing after them, and 20/s shed at the door (never sent
    upstream, but in the error count): retries rescue most requests, so attempts are not
    cut; counted as failed retries, the sheds made the law cut them."""
    from self_tune.objective import Objective
    from self_tune.policies import RetryAttemptsLaw, Signals

    def propose(**values: float) -> float | None:
        signals = Signals(TelemetrySnapshot(taken_at=0.0, values=values), objective=Objective())
        proposal = RetryAttemptsLaw().propose(signals, 3)
        return None if proposal is None else proposal.value

    assert propose(retries_per_s=10.0, errors_per_s=22.0, shed_per_s=20.0) is None
    assert propose(retries_per_s=10.0, errors_per_s=9.0, shed_per_s=0.0) == 2  # 10% rescued
